"""Delivery timing and provider feedback: `not_before` (a row held for quiet hours or waiting
for its next retry), `fallback_of` (the row whose permanent failure created this one), the
SMS opt-out list, and the indexes that status callbacks and the stuck-row sweep look up by.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("not_before", TS))
        batch.add_column(sa.Column("fallback_of", sa.String(36)))
    op.create_index("ix_deliveries_provider_id", "deliveries", ["provider_id"])
    op.create_index("ix_deliveries_state_channel", "deliveries", ["state", "channel", "updated_at"])
    op.create_table(
        "sms_opt_outs",
        sa.Column("address", sa.Text, primary_key=True),
        sa.Column("keyword", sa.String(20), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
