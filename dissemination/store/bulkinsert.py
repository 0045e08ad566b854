"""Many rows in one INSERT on PostgreSQL: one array parameter per column, unnested into rows
(`INSERT ... SELECT ... FROM unnest(:a, :b, ...)`). The statement's text is the same for any
number of rows, so it is compiled and prepared once, and each value is bound once, in its
column's array, rather than as one of thousands of numbered parameters. A statement that
must follow the insert in the same transaction can go with it, in one round trip
(`followed_by`)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Table, TextClause, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
ARRAYS_FROM = 16
"""Rows from which an insert on PostgreSQL goes as arrays rather than as rows of values."""


def _is_json(table: Table, name: str) -> bool:
    return isinstance(table.c[name].type, JSON)


@functools.cache
def _statement(
    table: Table, names: tuple[str, ...], ignore_conflicts: bool, followed_by: str | None
) -> TextClause:
    def array_type(name: str) -> str:
        if _is_json(table, name):
            return "TEXT[]"  # sent as text, cast back per row
        return f"{table.c[name].type.compile(dialect=_DIALECT)}[]"

    columns = ", ".join(names)
    selected = ", ".join(f"CAST({n} AS JSON)" if _is_json(table, n) else n for n in names)
    arrays = ", ".join(f"CAST(:{n} AS {array_type(n)})" for n in names)
    conflicts = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    insert = (
        f"INSERT INTO {table.name} ({columns}) SELECT {selected} "  # noqa: S608 - schema names
        f"FROM unnest({arrays}) AS u({columns}){conflicts}"
    )
    if followed_by is None:
        return text(insert)
    # A data-modifying WITH runs to completion whether or not the statement reads it.
    return text(f"WITH inserted AS ({insert}) {followed_by}")


async def insert_as_arrays(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    ignore_conflicts: bool = False,
    followed_by: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> int:
    """Insert `rows` (column name -> value; a column a row lacks is NULL) into `table` on
    PostgreSQL in one statement; returns how many rows were inserted. `followed_by` is a
    statement that goes in the same one (an UPDATE of another table, say: it sees the
    database as the insert found it, not the inserted rows), with its own `parameters` (named
    unlike any column); the count is then the one it reports."""
    names = tuple(c.name for c in table.columns if any(c.name in row for row in rows))
    arrays: dict[str, list[Any]] = {}
    for name in names:
        column = [row.get(name) for row in rows]
        if _is_json(table, name):
            column = [None if item is None else json.dumps(item) for item in column]
        arrays[name] = column
    statement = _statement(table, names, ignore_conflicts, followed_by)
    result = await conn.execute(statement, arrays | dict(parameters or {}))
    return int(result.rowcount or 0)


async def insert_many(
    conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert `rows` into `table`: as arrays on PostgreSQL from `ARRAYS_FROM` rows, else as
    rows of values."""
    if conn.dialect.name == "postgresql" and len(rows) >= ARRAYS_FROM:
        await insert_as_arrays(conn, table, rows)
    elif rows:
        await conn.execute(table.insert(), list(rows))
