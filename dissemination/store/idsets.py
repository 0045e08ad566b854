"""A set of keys as one statement parameter, however many there are: an array on PostgreSQL
(`column = ANY(:keys)`), a JSON array on SQLite (`column IN (SELECT value FROM
json_each(:keys))`). An expanded `IN (:k1, :k2, ...)` is compiled per key and makes a new
statement text for every set size, which PostgreSQL's driver then prepares afresh; this one
has the same text for 1 key or 10,000."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, String, any_, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement


def one_of(dialect: str, column: ColumnElement[Any], keys: Collection[str]) -> ColumnElement[bool]:
    """`column IN keys` for a string column, as one parameter in `dialect`."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, list(keys), type_=ARRAY(String)))
    values: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam(None, json.dumps(list(keys)), type_=String))
    )
    return column.in_(values.scalar_subquery())
