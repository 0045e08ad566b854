"""PostgreSQL advisory locks, transaction-scoped: taken inside a transaction and released when
it ends, so a crashed holder never leaves one behind. SQLite has none and needs none: it runs
one writing transaction at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


def lock_key(*parts: str) -> int:
    """A lock's 64-bit key, derived from its name's parts."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_all(conn: AsyncConnection, keys: Collection[int]) -> None:
    """Wait for every lock in `keys`, taken in one order so that two callers never deadlock.
    Nothing on SQLite."""
    if not keys or conn.dialect.name != "postgresql":
        return
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(key) FROM unnest(CAST(:keys AS BIGINT[])) AS key"),
        {"keys": sorted(set(keys))},
    )


async def try_lock(conn: AsyncConnection, key: int) -> bool:
    """Take the lock if no other transaction holds it; False, at once, if one does. Always
    True on SQLite."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}))
