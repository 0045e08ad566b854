"""Escalation: the policies administrators define, and one durable timer per (alert,
stakeholder) that must acknowledge, holding a snapshot of the policy's steps, when the first
delivery went, and the next step and when it is due. Escalation rows (resends, the next
channel, supervisor notices) are delivery rows with their own ids, so the unique target key
gives way to the primary key (whose id is already derived from the target).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "escalation_policies",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "escalations",
        sa.Column("alert_id", sa.String(36), sa.ForeignKey("alerts.id"), primary_key=True),
        sa.Column("stakeholder_id", sa.String(36), primary_key=True),
        sa.Column("policy_id", sa.String(36), nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("next_step", sa.Integer, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("next_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_escalations_due", "escalations", ["state", "next_at"])
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("uq_deliveries_target", type_="unique")
    op.create_index("ix_deliveries_alert_stakeholder", "deliveries", ["alert_id", "stakeholder_id"])
