"""Two-person approval and imminent-danger releases.

`approvals`: one row per alert held for a second administrator's approval, with the rule that
held it, who submitted it, and the decision (approved, rejected with a reason, or withdrawn by
a Cancel). `special_releases`: releases outside the normal rules under 28 CFR 23.20(e)(2),
each with its typed justification, flagged for review until an administrator reviews it.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("alert_id", sa.String(36), sa.ForeignKey("alerts.id"), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("submitted_by", sa.Text),
        sa.Column("held_at", TS, nullable=False),
        sa.Column("decided_by", sa.Text),
        sa.Column("decided_by_name", sa.Text),
        sa.Column("decided_at", TS),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_approvals_state", "approvals", ["state", "held_at"])
    op.create_table(
        "special_releases",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("alert_id", sa.String(36), sa.ForeignKey("alerts.id"), nullable=False),
        sa.Column("stakeholder_id", sa.String(36), nullable=False),
        sa.Column("justification", sa.Text, nullable=False),
        sa.Column("released_by", sa.Text, nullable=False),
        sa.Column("released_by_name", sa.Text, nullable=False),
        sa.Column("released_at", TS, nullable=False),
        sa.Column("deliveries", sa.JSON, nullable=False),
        sa.Column("reviewed_by", sa.Text),
        sa.Column("reviewed_at", TS),
        sa.Column("review_note", sa.Text),
    )
    op.create_index("ix_special_releases_review", "special_releases", ["reviewed_at"])
