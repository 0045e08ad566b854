"""Acknowledgment tracking: one `acks` row per (alert, stakeholder) that must acknowledge,
holding the random id its signed token names, the short code an SMS reply may quote, when
it expires, and, once acknowledged, who, when, by which channel and with what comment. Also
`service_secrets`, where a key generated on first start is kept for every instance to share
when none is configured.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "acks",
        sa.Column("alert_id", sa.String(36), sa.ForeignKey("alerts.id"), primary_key=True),
        sa.Column("stakeholder_id", sa.String(36), primary_key=True),
        sa.Column("token_id", sa.String(32), nullable=False, unique=True),
        sa.Column("code", sa.String(8), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("acknowledged_at", TS),
        sa.Column("channel", sa.String(20)),
        sa.Column("actor_id", sa.String(36)),
        sa.Column("actor_name", sa.Text),
        sa.Column("comment", sa.Text),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_acks_stakeholder_code", "acks", ["stakeholder_id", "code"])
    op.create_table(
        "service_secrets",
        sa.Column("name", sa.String(60), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
