"""Signing in: password, then the TOTP code (or a recovery code) once enrolled; failures
counted per account (too many within the window lock it for a while) and attempts throttled
per remote address; every sign-in, failure, lockout and recovery-code use audited. Never a
password or code in the audit log or the logs.

The answers never tell which usernames exist: a username no account has counts its failures
and locks the same way (in the process's memory, `UnknownFailures`), and every attempt runs
one password verification, a locked or unknown one included, so it takes as long."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from dissemination.accounts.errors import AccountRefused
from dissemination.accounts.model import ENTITY, Account, account_of
from dissemination.accounts.passwords import hash_password, verify_password, waste_a_verification
from dissemination.accounts.sessions import (
    LiveSession,
    NewSession,
    SessionStore,
    Timeouts,
    open_session,
)
from dissemination.accounts.throttle import AddressThrottle
from dissemination.accounts.totp import accepted_step, recovery_digest
from dissemination.settings import AccountsSettings
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.tables import account_recovery_codes, accounts

ANONYMOUS = Actor(None, "anonymous sign-in")
MAX_UNKNOWN_USERNAMES = 10_000


def _invalid() -> AccountRefused:
    return AccountRefused(401, "invalid_credentials", "unknown username or wrong password")


def _locked(until: datetime) -> AccountRefused:
    return AccountRefused(
        423, "account_locked", f"too many failed sign-ins: locked until {until.isoformat()}"
    )


class UnknownFailures:
    """Failed sign-ins of usernames no account has, counted and locked exactly as an account's
    are in the store, so that an unknown username answers as a known one would. In the
    process's memory, bounded whatever is sprayed at it: each username is kept as a 16-byte
    digest (whatever its length, and never as typed), at most `max_usernames` counting
    failures (the least recently failed forgotten first) and as many locked (the soonest
    unlocked forgotten first). Each instance of the service counts its own."""

    def __init__(
        self,
        limit: int,
        window: timedelta,
        lockout: timedelta,
        max_usernames: int = MAX_UNKNOWN_USERNAMES,
    ) -> None:
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self.max_usernames = max_usernames
        self._counting: OrderedDict[bytes, tuple[int, datetime]] = OrderedDict()
        self._locked: OrderedDict[bytes, datetime] = OrderedDict()  # in order of locking

    @staticmethod
    def _key(username: str) -> bytes:
        return hashlib.blake2b(username.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._counting) + len(self._locked)

    def locked_until(self, username: str, now: datetime) -> datetime | None:
        """When the lock on `username` ends, if it is locked at `now`."""
        while self._locked and next(iter(self._locked.values())) <= now:
            self._locked.popitem(last=False)
        until = self._locked.get(self._key(username))
        return until if until is not None and now < until else None

    def fail(self, username: str, now: datetime) -> tuple[int, datetime | None]:
        """Count a failure of `username` at `now`: the failures within the window, and when
        the lock this one sets ends (None: not locked), as `SignIn._failed` counts them."""
        key = self._key(username)
        current = self._counting.pop(key, None)
        if current is None or now - current[1] >= self.window:
            count, since = 1, now
        else:
            count, since = current[0] + 1, current[1]
        if count >= self.limit:
            until = (now + self.lockout).astimezone(UTC)
            self._locked.pop(key, None)
            self._locked[key] = until
            while len(self._locked) > self.max_usernames:
                self._locked.popitem(last=False)
            return count, until
        self._counting[key] = (count, since)  # most recently failed last
        while len(self._counting) > self.max_usernames:
            self._counting.popitem(last=False)
        return count, None


def actor_of(account: Account | Mapping[Any, Any]) -> Actor:
    if isinstance(account, Account):
        return Actor(account.id, account.username, account.id)
    return Actor(account["id"], account["username"], account["id"])


async def audit_own(
    conn: AsyncConnection,
    now: datetime,
    account: Account | Mapping[Any, Any],
    action: str,
    after: dict[str, Any],
) -> None:
    """An audit entry for what an account did to itself (sign-in, enrolment, a recovery code)."""
    actor = actor_of(account)
    await write_audit(
        conn,
        at=now,
        actor=actor,
        action=action,
        entity=ENTITY,
        entity_id=actor.id,
        before=None,
        after=after,
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a sign-in offers: `code` (TOTP) or `recovery_code` once enrolled."""

    username: str
    password: str
    code: str | None = None
    recovery_code: str | None = None


@dataclass(frozen=True, slots=True)
class SignedIn:
    account: Account
    session: NewSession


def timeouts_of(settings: AccountsSettings) -> Timeouts:
    return Timeouts(
        timedelta(minutes=settings.session_idle_minutes),
        timedelta(hours=settings.session_absolute_hours),
    )


class SignIn:
    """Sign-in, sign-out, and who a session cookie belongs to."""

    def __init__(self, database: Database, settings: AccountsSettings, clock: Clock) -> None:
        self.database = database
        self.settings = settings
        self.clock = clock
        self.timeouts = timeouts_of(settings)
        self.sessions = SessionStore(database, self.timeouts)
        self.throttle = AddressThrottle(settings.attempts_per_address_per_minute)
        self.unknown = UnknownFailures(
            settings.max_failed_attempts,
            timedelta(minutes=settings.failure_window_minutes),
            timedelta(minutes=settings.lockout_minutes),
        )

    async def sign_in(self, offered: Credentials, remote: str) -> SignedIn:
        """A new session, or AccountRefused: 401 invalid_credentials / second_factor_required
        / invalid_code, 423 account_locked, 429 too_many_attempts."""
        now = self.clock()
        if not self.throttle.allow(remote, now):
            raise AccountRefused(429, "too_many_attempts", "too many sign-in attempts; wait")
        username = offered.username.strip().lower()
        async with self.database.reading() as conn:
            query = select(accounts).where(accounts.c.username == username)
            row = (await conn.execute(query)).mappings().first()
        # one verification on every path (unknown, locked or not), so none answers sooner
        if row is None:
            await waste_a_verification(offered.password)
            await self._unknown_failed(username, now)
            raise _invalid()
        matches, stale = await verify_password(row["password_hash"], offered.password)
        if row["locked_until"] is not None and now < row["locked_until"]:
            await self._audit(actor_of(row), row["id"], "sign_in_refused", {"reason": "locked"})
            raise _locked(row["locked_until"])
        if not matches:
            await self._failed(row, "wrong_password")
            raise _invalid()
        if not row["active"]:
            await self._audit(actor_of(row), row["id"], "sign_in_refused", {"reason": "disabled"})
            raise _invalid()
        rehashed = await hash_password(offered.password) if stale else None
        method = await self._second_factor(row, offered)
        return await self._succeed(row, method, rehashed)

    async def _second_factor(self, row: Mapping[Any, Any], offered: Credentials) -> str:
        """How the second factor was proven ("totp", "recovery_code"; "none" before
        enrolment); a failure is counted toward lockout."""
        if not row["totp_enabled"]:
            return "none"
        if offered.recovery_code:
            if await self._use_recovery_code(row, offered.recovery_code):
                return "recovery_code"
            await self._failed(row, "wrong_recovery_code")
            raise AccountRefused(401, "invalid_code", "wrong or used recovery code")
        if not offered.code:
            raise AccountRefused(
                401, "second_factor_required", "a TOTP code (or a recovery code) is required"
            )
        step = accepted_step(row["totp_secret"], offered.code, self.clock(), row["totp_last_step"])
        if step is None or not await self._claim_step(row["id"], step):
            await self._failed(row, "wrong_code")
            raise AccountRefused(401, "invalid_code", "wrong, expired or already used code")
        return "totp"

    async def _claim_step(self, account_id: str, step: int) -> bool:
        """Record `step` as used unless it (or a later one) was used already: a code is
        accepted once, even by two sign-ins at the same moment."""
        async with self.database.transaction() as conn:
            result = await conn.execute(
                update(accounts)
                .where(
                    accounts.c.id == account_id,
                    or_(accounts.c.totp_last_step.is_(None), accounts.c.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
            return int(result.rowcount) == 1

    async def _use_recovery_code(self, row: Mapping[Any, Any], code: str) -> bool:
        now = self.clock()
        async with self.database.transaction() as conn:
            result = await conn.execute(
                update(account_recovery_codes)
                .where(
                    account_recovery_codes.c.account_id == row["id"],
                    account_recovery_codes.c.code_sha256 == recovery_digest(code),
                    account_recovery_codes.c.used_at.is_(None),
                )
                .values(used_at=now)
            )
            if int(result.rowcount) != 1:
                return False
            left = await conn.scalar(
                select(func.count())
                .select_from(account_recovery_codes)
                .where(
                    account_recovery_codes.c.account_id == row["id"],
                    account_recovery_codes.c.used_at.is_(None),
                )
            )
            await audit_own(conn, now, row, "recovery_code_used", {"remaining": int(left or 0)})
        return True

    async def _succeed(self, row: Mapping[Any, Any], method: str, rehashed: str | None) -> SignedIn:
        now = self.clock()
        values: dict[str, Any] = {"failed_attempts": 0, "failed_since": None, "locked_until": None}
        if rehashed is not None:
            values["password_hash"] = rehashed
        async with self.database.transaction() as conn:
            await conn.execute(update(accounts).where(accounts.c.id == row["id"]).values(**values))
            session = await open_session(conn, row["id"], method != "none", now, self.timeouts)
            await audit_own(
                conn, now, row, "sign_in", {"session": session.id, "secondFactor": method}
            )
            fresh = (
                (await conn.execute(select(accounts).where(accounts.c.id == row["id"])))
                .mappings()
                .one()
            )
        return SignedIn(account_of(fresh), session)

    async def _failed(self, row: Mapping[Any, Any], reason: str) -> None:
        """Count a failure; the one that reaches the limit within the window locks the
        account for the lockout period."""
        now = self.clock()
        window = timedelta(minutes=self.settings.failure_window_minutes)
        async with self.database.transaction() as conn:
            query = select(accounts.c.failed_attempts, accounts.c.failed_since).where(
                accounts.c.id == row["id"]
            )
            current = (await conn.execute(query)).one()
            since = current.failed_since
            if since is None or now - since >= window:
                count, since = 1, now
            else:
                count = current.failed_attempts + 1
            locked = count >= self.settings.max_failed_attempts
            values: dict[str, Any] = {"failed_attempts": count, "failed_since": since}
            if locked:
                until = now + timedelta(minutes=self.settings.lockout_minutes)
                values = {"failed_attempts": 0, "failed_since": None, "locked_until": until}
            await conn.execute(update(accounts).where(accounts.c.id == row["id"]).values(**values))
            await self._write(conn, actor_of(row), row["id"], "sign_in_failed", {"reason": reason})
            if locked:
                await self._write(
                    conn,
                    actor_of(row),
                    row["id"],
                    "lockout",
                    {"lockedUntil": values["locked_until"].isoformat(), "failures": count},
                )

    async def _unknown_failed(self, username: str, now: datetime) -> None:
        """A failure of a username no account has: refused as a locked account is while its
        lock lasts, else counted (and locked at the limit) as `_failed` counts an account's;
        audited without the username (it may be a password typed in the wrong field). 423
        while locked."""
        until = self.unknown.locked_until(username, now)
        if until is not None:
            refused = {"reason": "locked", "account": "unknown"}
            await self._audit(ANONYMOUS, None, "sign_in_refused", refused)
            raise _locked(until)
        count, until = self.unknown.fail(username, now)
        async with self.database.transaction() as conn:
            failed = {"reason": "unknown_account"}
            await self._write(conn, ANONYMOUS, None, "sign_in_failed", failed)
            if until is not None:
                locked = {"lockedUntil": until.isoformat(), "failures": count, "account": "unknown"}
                await self._write(conn, ANONYMOUS, None, "lockout", locked)

    async def _audit(
        self, actor: Actor, account_id: str | None, action: str, after: Mapping[Any, Any]
    ) -> None:
        async with self.database.transaction() as conn:
            await self._write(conn, actor, account_id, action, after)

    async def _write(
        self,
        conn: AsyncConnection,
        actor: Actor,
        account_id: str | None,
        action: str,
        after: Mapping[Any, Any],
    ) -> None:
        await write_audit(
            conn,
            at=self.clock(),
            actor=actor,
            action=action,
            entity=ENTITY,
            entity_id=account_id,
            before=None,
            after=after,
        )

    async def session_of(
        self, secret: str, *, touch: bool = True
    ) -> tuple[LiveSession, Account] | None:
        """The live session for a cookie and its account (None if either is not in force);
        `touch` as `SessionStore.find`."""
        session = await self.sessions.find(secret, self.clock(), touch=touch)
        if session is None:
            return None
        async with self.database.reading() as conn:
            query = select(accounts).where(accounts.c.id == session.account_id)
            row = (await conn.execute(query)).mappings().first()
        if row is None or not row["active"]:
            return None
        return session, account_of(row)

    async def sign_out(self, session_id: str, account: Account) -> None:
        now = self.clock()
        async with self.database.transaction() as conn:
            await SessionStore.end_in(conn, session_id, now)
            await self._write(
                conn, actor_of(account), account.id, "sign_out", {"session": session_id}
            )
