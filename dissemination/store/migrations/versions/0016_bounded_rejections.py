"""Rejected inputs kept bounded: a rejection keeps the first 4 KiB of its body, with the
body's full size and SHA-256 (a refused 10 MB body no longer costs 10 MB).

Rows recorded before this revision keep their whole body; their size and hash are filled
in from it here, so every row has both.

Revision ID: 0016
Revises: 0015
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BATCH = 100


def upgrade() -> None:
    with op.batch_alter_table("rejections") as batch:
        batch.add_column(sa.Column("body_size", sa.BigInteger))
        batch.add_column(sa.Column("body_sha256", sa.String(64)))
    _backfill(op.get_bind())


def _backfill(connection: sa.Connection) -> None:
    """Size and hash of the kept bodies, a batch at a time (bodies may be large)."""
    table = sa.table(
        "rejections",
        sa.column("id", sa.Integer),
        sa.column("body", sa.LargeBinary),
        sa.column("body_size", sa.BigInteger),
        sa.column("body_sha256", sa.String),
    )
    last = 0
    while True:
        rows = connection.execute(
            sa.select(table.c.id, table.c.body)
            .where(table.c.id > last)
            .order_by(table.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        for row_id, body in rows:
            connection.execute(
                sa.update(table)
                .where(table.c.id == row_id)
                .values(body_size=len(body), body_sha256=hashlib.sha256(body).hexdigest())
            )
        last = rows[-1][0]
