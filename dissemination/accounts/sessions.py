"""Sign-in sessions in the store: a random secret (the cookie) and a CSRF token, both kept
only as SHA-256 digests; a session ends when revoked, after `idle` unused or `absolute`
after it began."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.store.database import Database
from dissemination.store.tables import account_sessions


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just made: its id, and the secrets the client gets once."""

    id: str
    secret: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LiveSession:
    """A session that is in force."""

    id: str
    account_id: str
    second_factor: bool
    csrf_sha256: str

    def csrf_matches(self, token: str) -> bool:
        return hmac.compare_digest(digest(token), self.csrf_sha256)


@dataclass(frozen=True, slots=True)
class Timeouts:
    idle: timedelta
    absolute: timedelta


async def open_session(
    conn: AsyncConnection,
    account_id: str,
    second_factor: bool,
    now: datetime,
    timeouts: Timeouts,
) -> NewSession:
    """A new session for the account, in the caller's transaction."""
    session = NewSession(
        str(uuid.uuid4()),
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(32),
        now + timeouts.absolute,
    )
    await conn.execute(
        account_sessions.insert().values(
            id=session.id,
            account_id=account_id,
            secret_sha256=digest(session.secret),
            csrf_sha256=digest(session.csrf_token),
            second_factor=second_factor,
            created_at=now,
            last_seen_at=now,
        )
    )
    return session


async def revoke_account_sessions(conn: AsyncConnection, account_id: str, now: datetime) -> int:
    """End every live session of the account; how many there were."""
    result = await conn.execute(
        update(account_sessions)
        .where(
            account_sessions.c.account_id == account_id,
            account_sessions.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return int(result.rowcount)


def _live(row: Mapping[Any, Any], now: datetime, timeouts: Timeouts) -> bool:
    return (
        row["revoked_at"] is None
        and now < row["last_seen_at"] + timeouts.idle
        and now < row["created_at"] + timeouts.absolute
    )


class SessionStore:
    """Finding, refreshing and ending sessions."""

    def __init__(self, database: Database, timeouts: Timeouts) -> None:
        self.database = database
        self.timeouts = timeouts

    async def find(self, secret: str, now: datetime, *, touch: bool = True) -> LiveSession | None:
        """The live session for the cookie `secret` (its idle time starts again, unless not
        `touch`: a live page's own refreshes are no sign of a person), or None: unknown,
        revoked, idle too long or past its absolute lifetime."""
        async with self.database.transaction() as conn:
            query = select(account_sessions).where(
                account_sessions.c.secret_sha256 == digest(secret)
            )
            row = (await conn.execute(query)).mappings().first()
            if row is None or not _live(row, now, self.timeouts):
                return None
            if touch:
                await conn.execute(
                    update(account_sessions)
                    .where(account_sessions.c.id == row["id"])
                    .values(last_seen_at=now)
                )
        return LiveSession(row["id"], row["account_id"], row["second_factor"], row["csrf_sha256"])

    async def end(self, session_id: str, now: datetime) -> None:
        async with self.database.transaction() as conn:
            await self.end_in(conn, session_id, now)

    @staticmethod
    async def end_in(conn: AsyncConnection, session_id: str, now: datetime) -> None:
        await conn.execute(
            update(account_sessions)
            .where(account_sessions.c.id == session_id, account_sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
