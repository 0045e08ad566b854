"""The dissemination record: one append-only, hash-chained entry per release or withholding
(recipient, organization, channel, address, the rule that matched, the justification, the
alert, a hash of the exact content sent, time), and the chain's head (its last sequence
number and hash), which every append moves in the same transaction.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

GENESIS = "0" * 64

APPEND_ONLY_SQLITE = """
CREATE TRIGGER dissemination_records_no_{op} BEFORE {op} ON dissemination_records
BEGIN SELECT RAISE(ABORT, 'dissemination_records is append-only'); END
"""

APPEND_ONLY_POSTGRESQL = [
    """
    CREATE FUNCTION dissemination_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'dissemination_records is append-only'; END $$
    """,
    """
    CREATE TRIGGER dissemination_records_append_only
    BEFORE UPDATE OR DELETE ON dissemination_records
    FOR EACH ROW EXECUTE FUNCTION dissemination_records_append_only()
    """,
]


def upgrade() -> None:
    op.create_table(
        "dissemination_records",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("delivery_id", sa.String(36)),
        sa.Column("stakeholder_id", sa.String(36), nullable=False),
        sa.Column("organization", sa.Text),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("rule", sa.JSON, nullable=False),
        sa.Column("justification", sa.Text, nullable=False),
        sa.Column("content_sha256", sa.String(64)),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_dissemination_records_at", "dissemination_records", ["at"])
    op.create_index("ix_dissemination_records_alert", "dissemination_records", ["alert_id"])
    chain = op.create_table(
        "dissemination_chain",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(chain, [{"id": 1, "seq": 0, "last_hash": GENESIS}])
    if op.get_context().dialect.name == "sqlite":
        for operation in ("UPDATE", "DELETE"):
            op.execute(APPEND_ONLY_SQLITE.format(op=operation))
    else:
        for statement in APPEND_ONLY_POSTGRESQL:
            op.execute(statement)
