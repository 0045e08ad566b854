"""API bearer tokens: created and revoked from the CLI, stored only as SHA-256 hashes.

Tokens are 256-bit random secrets, so a fast hash is enough (no password stretching needed);
the secret is shown once at creation and cannot be recovered. A secret is `fdt_` followed by
43 URL-safe base64 characters (`A-Z a-z 0-9 - _`). Names are unique, revoked tokens' too."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import exc, or_, select, update

from dissemination.errors import TokenNameTaken
from dissemination.store.database import Database
from dissemination.store.tables import api_tokens

TOKEN_PREFIX = "fdt_"  # noqa: S105 - a public prefix, not a secret


class Role(StrEnum):
    """What a token may do: admin manages, publisher publishes alerts, viewer reads."""

    ADMIN = "admin"
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


def _info(row: Mapping[Any, Any]) -> TokenInfo:
    return TokenInfo(
        row["id"],
        row["name"],
        Role(row["role"]),
        row["created_at"],
        row["revoked_at"],
        tuple(row["senders"] or ()),
    )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Create, verify, list and revoke API tokens."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(
        self, name: str, role: Role, now: datetime, senders: Sequence[str] = ()
    ) -> tuple[TokenInfo, str]:
        """A new token and its secret (shown once); `senders` are those its holder may
        publish alerts as. TokenNameTaken if a token (even a revoked one) has the name."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        senders = tuple(dict.fromkeys(s.strip() for s in senders if s.strip()))
        info = TokenInfo(str(uuid.uuid4()), name, role, now, senders=senders)
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
                    )
                )
        except exc.IntegrityError:  # created by someone else since the check
            raise TokenNameTaken(self._taken(name)) from None
        return info, secret

    @staticmethod
    def _taken(name: str) -> str:
        return f"a token named {name!r} exists already (token names are unique, revoked ones too)"

    async def verify(self, secret: str) -> TokenInfo | None:
        """The live token for `secret`, or None (unknown or revoked)."""
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


READERS = (Role.ADMIN, Role.VIEWER)
