"""API token names are unique, so `tokens revoke NAME` means one token.

Tokens that shared a name before this revision keep it in order of creation: the oldest keeps
the name as it was, each later one is renamed `<name>-2`, `<name>-3`, ... (the first such
name not already taken).

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _rename_duplicates(op.get_bind())
    with op.batch_alter_table("api_tokens") as batch:
        batch.create_unique_constraint("uq_api_tokens_name", ["name"])


def _rename_duplicates(connection: sa.Connection) -> None:
    table = sa.table(
        "api_tokens",
        sa.column("id", sa.String),
        sa.column("name", sa.Text),
        sa.column("created_at", sa.DateTime),
    )
    rows = connection.execute(
        sa.select(table.c.id, table.c.name).order_by(table.c.created_at, table.c.id)
    ).all()
    taken = {name for _id, name in rows}
    seen: set[str] = set()
    for token_id, name in rows:
        if name not in seen:
            seen.add(name)
            continue
        suffix = 2
        while f"{name}-{suffix}" in taken:
            suffix += 1
        renamed = f"{name}-{suffix}"
        taken.add(renamed)
        connection.execute(sa.update(table).where(table.c.id == token_id).values(name=renamed))
