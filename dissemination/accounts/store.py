"""Accounts in the store: created (the first administrator from the CLI, the rest by
administrators through the API), read, changed, disabled, their password or second factor
reset. Every change is audited in the transaction that makes it; a disabled account, a reset
password or second factor ends the account's sessions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import exc, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.accounts.errors import AccountRefused
from dissemination.accounts.model import ENTITY, Account, account_of, record_of
from dissemination.accounts.passwords import hash_password, temporary_password
from dissemination.accounts.roles import AccountRole
from dissemination.accounts.sessions import revoke_account_sessions
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.tables import account_recovery_codes, accounts

CHANGEABLE = {
    "displayName": "display_name",
    "organization": "organization",
    "roles": "roles",
    "clearance": "clearance",
    "senders": "senders",
    "active": "active",
}


def _missing(account_id: str) -> AccountRefused:
    return AccountRefused(404, "not_found", f"no account {account_id!r}")


async def _row(conn: AsyncConnection, account_id: str) -> Mapping[Any, Any] | None:
    query = select(accounts).where(accounts.c.id == account_id)
    return (await conn.execute(query)).mappings().first()


async def _other_administrators(conn: AsyncConnection, account_id: str) -> int:
    rows = await conn.execute(
        select(accounts.c.roles).where(accounts.c.active.is_(True), accounts.c.id != account_id)
    )
    return sum(1 for (roles,) in rows if AccountRole.ADMINISTRATOR.value in roles)


class AccountStore:
    """Create, read, change and reset accounts."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(
        self, fields: Mapping[Any, Any], actor: Actor, now: datetime
    ) -> tuple[dict[str, Any], str]:
        """A new account and its temporary password (shown once). `fields` are the API's:
        username, displayName, organization, roles, clearance, senders. 409 if the username
        is taken."""
        password = temporary_password()
        password_hash = await hash_password(password)
        username = fields["username"].lower()
        values = {
            "id": str(uuid.uuid4()),
            "username": username,
            "display_name": fields.get("displayName", username),
            "organization": fields["organization"],
            "roles": sorted(set(fields["roles"])),
            "clearance": dict(fields["clearance"]),
            "senders": list(dict.fromkeys(fields.get("senders", ()))),
            "active": True,
            "password_hash": password_hash,
            "totp_enabled": False,
            "failed_attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.database.transaction() as conn:
                taken = select(accounts.c.id).where(accounts.c.username == username)
                if await conn.scalar(taken):
                    raise self._taken(username)
                await conn.execute(accounts.insert().values(**values))
                row = await _row(conn, values["id"])
                assert row is not None
                record = record_of(row)
                await write_audit(
                    conn,
                    at=now,
                    actor=actor,
                    action="create",
                    entity=ENTITY,
                    entity_id=record["id"],
                    before=None,
                    after=record,
                )
        except exc.IntegrityError:  # created by someone else since the check
            raise self._taken(username) from None
        return record, password

    @staticmethod
    def _taken(username: str) -> AccountRefused:
        return AccountRefused(409, "duplicate_username", f"the username {username!r} is taken")

    async def get(self, account_id: str) -> Account | None:
        async with self.database.reading() as conn:
            row = await _row(conn, account_id)
        return None if row is None else account_of(row)

    async def by_username(self, username: str) -> Account | None:
        query = select(accounts).where(accounts.c.username == username.strip().lower())
        async with self.database.reading() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else account_of(row)

    async def record(self, account_id: str) -> dict[str, Any]:
        async with self.database.reading() as conn:
            row = await _row(conn, account_id)
        if row is None:
            raise _missing(account_id)
        return record_of(row)

    async def page(self, after: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Accounts by username after `after`, and the cursor of the next page."""
        query = select(accounts).where(accounts.c.username > after)
        async with self.database.reading() as conn:
            rows = await conn.execute(query.order_by(accounts.c.username).limit(limit + 1))
            items = [record_of(row) for row in rows.mappings()]
        more = len(items) > limit
        items = items[:limit]
        return items, items[-1]["username"] if more else None

    async def count(self) -> int:
        async with self.database.reading() as conn:
            return int(await conn.scalar(select(func.count()).select_from(accounts)) or 0)

    async def update(
        self, account_id: str, changes: Mapping[Any, Any], actor: Actor, now: datetime
    ) -> dict[str, Any]:
        """Change what `changes` names (the API's field names). Disabling the account or
        taking a role away ends its sessions; the last active administrator keeps the role
        and stays active (409 last_administrator)."""
        values = {CHANGEABLE[key]: value for key, value in changes.items()}
        if "roles" in values:
            values["roles"] = sorted(set(values["roles"]))
        async with self.database.transaction() as conn:
            row = await _row(conn, account_id)
            if row is None:
                raise _missing(account_id)
            before = record_of(row)
            was_admin = AccountRole.ADMINISTRATOR.value in row["roles"] and row["active"]
            roles = values.get("roles", row["roles"])
            stays_admin = AccountRole.ADMINISTRATOR.value in roles and values.get(
                "active", row["active"]
            )
            if was_admin and not stays_admin and not await _other_administrators(conn, account_id):
                raise AccountRefused(
                    409, "last_administrator", "the last active administrator cannot be removed"
                )
            await conn.execute(
                update(accounts).where(accounts.c.id == account_id).values(**values, updated_at=now)
            )
            changed = await _row(conn, account_id)
            assert changed is not None
            after = record_of(changed)
            lost = set(row["roles"]) - set(roles)
            if values.get("active") is False or lost:
                await revoke_account_sessions(conn, account_id, now)
            await write_audit(
                conn,
                at=now,
                actor=actor,
                action="update",
                entity=ENTITY,
                entity_id=account_id,
                before=before,
                after=after,
            )
        return after

    async def reset_password(self, account_id: str, actor: Actor, now: datetime) -> str:
        """A new temporary password (shown once); the account's sessions end and any
        lockout is lifted."""
        password = temporary_password()
        password_hash = await hash_password(password)
        await self._reset(
            account_id,
            actor,
            now,
            "reset_password",
            password_hash=password_hash,
            failed_attempts=0,
            failed_since=None,
            locked_until=None,
        )
        return password

    async def reset_totp(self, account_id: str, actor: Actor, now: datetime) -> None:
        """Remove the second factor and the recovery codes: the account enrols again at its
        next sign-in. Its sessions end."""
        await self._reset(
            account_id,
            actor,
            now,
            "reset_totp",
            totp_secret=None,
            totp_enabled=False,
            totp_last_step=None,
        )

    async def revoke_sessions(self, account_id: str, actor: Actor, now: datetime) -> int:
        async with self.database.transaction() as conn:
            row = await _row(conn, account_id)
            if row is None:
                raise _missing(account_id)
            count = await revoke_account_sessions(conn, account_id, now)
            await write_audit(
                conn,
                at=now,
                actor=actor,
                action="revoke_sessions",
                entity=ENTITY,
                entity_id=account_id,
                before=None,
                after={"revoked": count},
            )
        return count

    async def _reset(
        self, account_id: str, actor: Actor, now: datetime, action: str, **values: Any
    ) -> None:
        async with self.database.transaction() as conn:
            row = await _row(conn, account_id)
            if row is None:
                raise _missing(account_id)
            await conn.execute(
                update(accounts).where(accounts.c.id == account_id).values(**values, updated_at=now)
            )
            if action == "reset_totp":
                await conn.execute(
                    account_recovery_codes.delete().where(
                        account_recovery_codes.c.account_id == account_id
                    )
                )
            await revoke_account_sessions(conn, account_id, now)
            changed = await _row(conn, account_id)
            assert changed is not None
            await write_audit(
                conn,
                at=now,
                actor=actor,
                action=action,
                entity=ENTITY,
                entity_id=account_id,
                before=record_of(row),
                after=record_of(changed),
            )
