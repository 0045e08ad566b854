"""Retention: when an alert was last revalidated (kept past the retention period on purpose),
and when its content, or a payload's body, was purged.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("revalidated_at", TS))
        batch.add_column(sa.Column("purged_at", TS))
    with op.batch_alter_table("payloads") as batch:
        batch.add_column(sa.Column("purged_at", TS))
