"""A flag on rows that were resent after a worker stopped mid-send (they may be duplicates).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("resent", sa.Boolean, nullable=False, server_default=sa.false()))
