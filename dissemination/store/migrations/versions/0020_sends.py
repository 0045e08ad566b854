"""Ad-hoc and scheduled sends: an analyst's alert with the audience it names, kept until it is
released onto the inbound exchange (at once, or when `send_at` comes) and afterwards, so the
alert's Updates and Cancels reach the same audience.

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sends",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("routing_key", sa.String(100), nullable=False),
        sa.Column("headline", sa.Text),
        sa.Column("audience", sa.JSON, nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("send_at", TS, nullable=False),
        sa.Column("claimed_until", TS),
        sa.Column("submitted_by", sa.Text),
        sa.Column("submitter_name", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("released_at", TS),
        sa.CheckConstraint(
            "state IN ('scheduled', 'releasing', 'released', 'cancelled')", name="ck_sends_state"
        ),
    )
    op.create_index("ix_sends_alert_id", "sends", ["alert_id"])
    # the release job's query: what is scheduled, by when it is due
    op.create_index("ix_sends_state_send_at", "sends", ["state", "send_at"])
