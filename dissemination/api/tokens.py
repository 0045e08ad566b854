"""API bearer tokens: created and revoked from the CLI, stored only as SHA-256 hashes.

Tokens are 256-bit random secrets, so a fast hash is enough (no password stretching needed);
the secret is shown once at creation and cannot be recovered. A secret is `fdt_` followed by
43 URL-safe base64 characters (`A-Z a-z 0-9 - _`). Names are unique, revoked tokens' too.

A personal token has an owner (a staff account) and an expiry; shared tokens made before
accounts have neither and keep working until `dissemination tokens assign` gives them an
owner."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import exc, or_, select, update

from dissemination.errors import TokenNameTaken
from dissemination.store.database import Database
from dissemination.store.tables import api_tokens

TOKEN_PREFIX = "fdt_"  # noqa: S105 - a public prefix, not a secret


class Role(StrEnum):
    """What a token may do: admin manages, approver reads and decides held alerts,
    publisher publishes alerts, viewer reads."""

    ADMIN = "admin"
    APPROVER = "approver"
    PUBLISHER = "publisher"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token's identity, never its secret."""

    id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None
    senders: tuple[str, ...] = ()
    """The senders its holder may publish alerts as."""
    owner_id: str | None = None
    """The staff account that owns it (None: a shared token from before accounts)."""
    expires_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """The token as the API shows it (never its secret)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "senders": list(self.senders),
            "owner": self.owner_id,
            "createdAt": self.created_at.isoformat(),
            "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
            "revokedAt": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _info(row: Mapping[Any, Any]) -> TokenInfo:
    return TokenInfo(
        row["id"],
        row["name"],
        Role(row["role"]),
        row["created_at"],
        row["revoked_at"],
        tuple(row["senders"] or ()),
        row["owner_id"],
        row["expires_at"],
    )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Create, verify, list and revoke API tokens."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(
        self,
        name: str,
        role: Role,
        now: datetime,
        senders: Sequence[str] = (),
        owner_id: str | None = None,
        lifetime: timedelta | None = None,
    ) -> tuple[TokenInfo, str]:
        """A new token and its secret (shown once); `senders` are those its holder may
        publish alerts as; a personal token has an `owner_id` and expires after `lifetime`.
        TokenNameTaken if a token (even a revoked one) has the name."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        senders = tuple(dict.fromkeys(s.strip() for s in senders if s.strip()))
        expires_at = now + lifetime if lifetime is not None else None
        info = TokenInfo(str(uuid.uuid4()), name, role, now, None, senders, owner_id, expires_at)
        try:
            async with self.database.transaction() as conn:
                if await conn.scalar(select(api_tokens.c.id).where(api_tokens.c.name == name)):
                    raise TokenNameTaken(self._taken(name))
                await conn.execute(
                    api_tokens.insert().values(
                        id=info.id,
                        name=name,
                        role=role.value,
                        token_sha256=_digest(secret),
                        created_at=now,
                        senders=list(senders),
                        owner_id=owner_id,
                        expires_at=expires_at,
                    )
                )
        except exc.IntegrityError:  # created by someone else since the check
            raise TokenNameTaken(self._taken(name)) from None
        return info, secret

    @staticmethod
    def _taken(name: str) -> str:
        return f"a token named {name!r} exists already (token names are unique, revoked ones too)"

    async def verify(self, secret: str, now: datetime | None = None) -> TokenInfo | None:
        """The live token for `secret`, or None (unknown, revoked, or expired at `now`)."""
        async with self.database.reading() as conn:
            row = (
                (
                    await conn.execute(
                        select(api_tokens).where(
                            api_tokens.c.token_sha256 == _digest(secret),
                            api_tokens.c.revoked_at.is_(None),
                        )
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        info = _info(row)
        if now is not None and info.expires_at is not None and now >= info.expires_at:
            return None
        return info

    async def owned(self, owner_id: str) -> list[TokenInfo]:
        """The account's tokens, revoked ones too, oldest first."""
        query = select(api_tokens).where(api_tokens.c.owner_id == owner_id)
        async with self.database.reading() as conn:
            rows = (await conn.execute(query.order_by(api_tokens.c.created_at))).mappings()
            return [_info(row) for row in rows]

    async def revoke_owned(self, token_id: str, owner_id: str, now: datetime) -> TokenInfo | None:
        """Revoke the account's token `token_id` (if live); the token, or None if the account
        has no token of that id."""
        async with self.database.transaction() as conn:
            await conn.execute(
                update(api_tokens)
                .where(
                    api_tokens.c.id == token_id,
                    api_tokens.c.owner_id == owner_id,
                    api_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            query = select(api_tokens).where(
                api_tokens.c.id == token_id, api_tokens.c.owner_id == owner_id
            )
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _info(row)

    async def assign(self, name: str, owner_id: str) -> TokenInfo | None:
        """Give the shared token `name` an owner (it keeps its secret, role and senders, and
        from now on lives only as long as the owner's account allows); None if no live
        token has that name."""
        async with self.database.transaction() as conn:
            await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
                .values(owner_id=owner_id)
            )
            query = select(api_tokens).where(
                api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None)
            )
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _info(row)

    async def revoke(self, id_or_name: str, now: datetime) -> int:
        """Revoke live tokens with this id or name; returns how many were revoked."""
        async with self.database.transaction() as conn:
            result = await conn.execute(
                update(api_tokens)
                .where(
                    or_(api_tokens.c.id == id_or_name, api_tokens.c.name == id_or_name),
                    api_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            return int(result.rowcount)

    async def all(self) -> list[TokenInfo]:
        async with self.database.reading() as conn:
            rows = (
                await conn.execute(select(api_tokens).order_by(api_tokens.c.created_at))
            ).mappings()
            return [_info(row) for row in rows]


READERS = (Role.ADMIN, Role.APPROVER, Role.VIEWER)
