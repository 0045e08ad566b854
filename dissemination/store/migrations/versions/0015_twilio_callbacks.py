"""Twilio's callbacks made idempotent.

`sms_inbound`: the inbound messages answered, by Twilio's MessageSid, with the TwiML reply
each got, so a retried or replayed message changes nothing and is answered as before; swept
after a week (`dissemination.api.twiliohooks`). `provider_statuses`: a message's final
status that arrived before its send was recorded (no row carried its provider id yet), kept
until the send is recorded and it is applied, or for a day if none ever is
(`dissemination.store.rows`).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sms_inbound",
        sa.Column("message_sid", sa.Text, primary_key=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("reply", sa.Text),
    )
    op.create_index("ix_sms_inbound_received_at", "sms_inbound", ["received_at"])
    op.create_table(
        "provider_statuses",
        sa.Column("channel", sa.String(20), primary_key=True),
        sa.Column("provider_id", sa.Text, primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error_code", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_index("ix_provider_statuses_received_at", "provider_statuses", ["received_at"])
