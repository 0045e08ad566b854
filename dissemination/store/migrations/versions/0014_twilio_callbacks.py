"""Twilio's callbacks made idempotent.

`sms_inbound`: the inbound messages answered, by Twilio's MessageSid, with the TwiML reply
each got, so a retried or replayed message changes nothing and is answered as before; swept
after a week (`dissemination.api.twiliohooks`).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sms_inbound",
        sa.Column("message_sid", sa.String(64), primary_key=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("reply", sa.Text),
    )
    op.create_index("ix_sms_inbound_received_at", "sms_inbound", ["received_at"])
