"""CAP Ack messages for disseminated alerts whose originator asks for them: one row per alert,
claimed by the instance that publishes its Ack and marked published once the broker
confirmed it. A claim left unpublished (its instance died) is taken over after a minute, so
an Ack may go twice across a crash, always with the same identifier.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cap_acks",
        sa.Column("alert_id", sa.String(36), sa.ForeignKey("alerts.id"), primary_key=True),
        sa.Column("identifier", sa.Text, nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
