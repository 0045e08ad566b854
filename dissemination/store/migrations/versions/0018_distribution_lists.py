"""Named distribution lists of stakeholders, which may contain other lists.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "distribution_lists",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_key", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("name_key", name="uq_distribution_lists_name_key"),
    )
    op.create_table(
        "distribution_list_members",
        sa.Column(
            "list_id",
            sa.String(36),
            sa.ForeignKey("distribution_lists.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("member_kind", sa.String(20), primary_key=True),
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("added_at", TS, nullable=False),
        sa.CheckConstraint(
            "member_kind IN ('stakeholder', 'list')", name="ck_distribution_list_member_kind"
        ),
    )
    # who contains this stakeholder or list: deletion and the "used by" answers
    op.create_index(
        "ix_distribution_list_members_member",
        "distribution_list_members",
        ["member_kind", "member_id"],
    )
