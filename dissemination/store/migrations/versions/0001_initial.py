"""Alerts, payloads, references, rejections, quarantine, the delivery ledger and API tokens.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "payloads",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("identifier", sa.Text, nullable=False),
        sa.Column("sent", sa.Text, nullable=False),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("msg_type", sa.String(20), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("tlp", sa.String(20), nullable=False),
        sa.Column("caveats", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("headline", sa.Text),
        sa.Column("source_format", sa.String(20), nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column(
            "payload_sha256", sa.String(64), sa.ForeignKey("payloads.sha256"), nullable=False
        ),
        sa.Column("received_at", TS, nullable=False),
        sa.UniqueConstraint("sender", "identifier", "sent", name="uq_alerts_key"),
    )
    op.create_index("ix_alerts_received_at", "alerts", ["received_at"])
    op.create_index("ix_alerts_state", "alerts", ["state"])
    op.create_table(
        "alert_references",
        sa.Column("alert_id", sa.String(36), sa.ForeignKey("alerts.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("ref_sender", sa.Text, nullable=False),
        sa.Column("ref_identifier", sa.Text, nullable=False),
        sa.Column("ref_sent", sa.Text, nullable=False),
        sa.Column("ref_alert_id", sa.String(36), nullable=False),
        sa.Column("resolved", sa.Integer, nullable=False),
    )
    op.create_index("ix_alert_references_ref", "alert_references", ["ref_alert_id"])
    op.create_table(
        "rejections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("message_id", sa.Text),
        sa.Column("reason", sa.String(60), nullable=False),
        sa.Column("errors", sa.JSON, nullable=False),
        sa.Column("content_type", sa.String(200)),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("reason", sa.String(60), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column(
            "payload_sha256", sa.String(64), sa.ForeignKey("payloads.sha256"), nullable=False
        ),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("alert_id", sa.String(36), sa.ForeignKey("alerts.id"), nullable=False),
        sa.Column("stakeholder_id", sa.String(36), nullable=False),
        sa.Column("subscription_id", sa.String(36)),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("provider_id", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint(
            "alert_id", "stakeholder_id", "channel", "address", name="uq_deliveries_target"
        ),
    )
    op.create_index("ix_deliveries_alert_state", "deliveries", ["alert_id", "state"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS),
    )
