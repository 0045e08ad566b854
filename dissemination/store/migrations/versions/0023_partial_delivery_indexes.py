"""Two delivery indexes hold only the rows that are looked up through them.

`ix_deliveries_state_channel` (state, channel, updated_at) held every row, though rows are
looked up by state alone only while in flight (pending, held, sending): by the backlog
gauges, the overdue check and the stuck-row sweep; settled rows are found by alert. It is
replaced by `ix_deliveries_in_flight`, the same columns over the rows in flight only.
`ix_deliveries_provider_id` held every row, though only rows with a provider's id (an SMS
SID, an email's Message-ID, once sent) are looked up by it: it becomes partial.

A row's insert and claim then write two index entries fewer, and its settle to a final state
one fewer; in a store that has sent for years both indexes stay the size of what is in
flight rather than of everything ever sent.

Revision ID: 0023
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

IN_FLIGHT = sa.text("state IN ('pending', 'held', 'sending')")
HAS_PROVIDER_ID = sa.text("provider_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_deliveries_state_channel", table_name="deliveries")
    op.create_index(
        "ix_deliveries_in_flight",
        "deliveries",
        ["state", "channel", "updated_at"],
        postgresql_where=IN_FLIGHT,
        sqlite_where=IN_FLIGHT,
    )
    op.drop_index("ix_deliveries_provider_id", table_name="deliveries")
    op.create_index(
        "ix_deliveries_provider_id",
        "deliveries",
        ["provider_id"],
        postgresql_where=HAS_PROVIDER_ID,
        sqlite_where=HAS_PROVIDER_ID,
    )
