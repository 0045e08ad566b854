"""What a delivery row needs to be sent and explained: the contact, the fallback channels,
whether acknowledgment is required, every subscription that matched, and why a row exists
(a rule matched, or the recipient had the alert that an Update or Cancel refers to).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("contact_id", sa.String(36)))
        batch.add_column(
            sa.Column("fallback_channels", sa.JSON, nullable=False, server_default="[]")
        )
        batch.add_column(
            sa.Column("ack_required", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("subscriptions", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("detail", sa.Text))
        batch.add_column(sa.Column("origin", sa.String(20), nullable=False, server_default="match"))
