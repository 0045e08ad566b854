"""Signed acknowledgment tokens.

A token names a random 128-bit id (the `acks` row it acknowledges) and its expiry, and is
signed with HMAC-SHA256 under the current key; it carries no personal data. Keys rotate: the
first configured key signs, retired keys still verify until their grace period ends. The
token is URL-safe base64 of `key id (2) | token id (16) | expiry (4, Unix seconds) | MAC (16)`,
51 characters, short enough for an SMS; no other spelling of the same bytes verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from dissemination.errors import TokenRefused
from dissemination.store.database import Database
from dissemination.store.tables import service_secrets

GENERATED_KEY_NAME = "ack_signing_key"
_LAYOUT = struct.Struct(">2s16sI")
_MAC_BYTES = 16
_TOKEN_BYTES = _LAYOUT.size + _MAC_BYTES
_TOKEN_CHARS = -(-_TOKEN_BYTES * 4 // 3)  # unpadded base64
_DOMAIN = b"fusion-dissemination ack v1|"
MAX_EXPIRY = 2**32 - 1  # 2106: alerts "expiring" later get tokens that expire then


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a good token names."""

    token_id: str
    expires_at: datetime


def new_token_id() -> str:
    """A fresh random token id, 128 bits as hex."""
    return secrets.token_hex(16)


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:2]


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decoded(token: str) -> bytes:
    """The bytes of a token written exactly as `sign` writes them. Base64 decoders accept
    other spellings of the same bytes (padding, the standard alphabet, other trailing bits,
    ignored characters): a token is refused unless it re-encodes to itself."""
    invalid = TokenRefused(403, "this acknowledgment link is not valid")
    if len(token) != _TOKEN_CHARS or not token.isascii():
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    if len(raw) != _TOKEN_BYTES or _encoded(raw) != token:
        raise invalid
    return raw


class AckSigner:
    """Signs with the first key; verifies with any key still in its grace period."""

    def __init__(self, keys: tuple[str, ...], retired_until: datetime | None = None) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        encoded = [key.encode() for key in keys]
        self._signing = encoded[0]
        self._keys = {_key_id(key): key for key in reversed(encoded)}
        self._current_id = _key_id(self._signing)
        self._retired_until = retired_until

    def sign(self, token_id: str, expires_at: datetime) -> str:
        expires = min(max(int(expires_at.timestamp()), 0), MAX_EXPIRY)
        body = _LAYOUT.pack(self._current_id, bytes.fromhex(token_id), expires)
        mac = hmac.new(self._signing, _DOMAIN + body, hashlib.sha256).digest()[:_MAC_BYTES]
        return _encoded(body + mac)

    def verify(self, token: str, now: datetime) -> VerifiedToken:
        """The id and expiry of a genuine, live token in its one canonical spelling;
        TokenRefused otherwise."""
        raw = _decoded(token)
        body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        key_id, token_id, expires = _LAYOUT.unpack(body)
        key = self._keys.get(key_id)
        expected = b"" if key is None else hmac.new(key, _DOMAIN + body, hashlib.sha256).digest()
        if key is None or not hmac.compare_digest(expected[:_MAC_BYTES], mac):
            raise TokenRefused(403, "this acknowledgment link is not valid")
        if key_id != self._current_id and (
            self._retired_until is None or now >= self._retired_until
        ):
            raise TokenRefused(410, "this acknowledgment link has expired")
        expires_at = datetime.fromtimestamp(expires, UTC)
        if now >= expires_at:
            raise TokenRefused(410, "this acknowledgment link has expired")
        return VerifiedToken(token_id.hex(), expires_at)


async def signing_keys(
    database: Database, configured: tuple[str, ...], now: datetime
) -> tuple[str, ...]:
    """The configured keys, or else the key generated for this store (created on first use,
    the same for every instance that shares the store)."""
    if configured:
        return configured
    async with database.transaction() as conn:
        await conn.execute(
            database.insert_ignoring_conflicts(service_secrets).values(
                name=GENERATED_KEY_NAME, value=secrets.token_hex(32), created_at=now
            )
        )
        value = await conn.scalar(
            select(service_secrets.c.value).where(service_secrets.c.name == GENERATED_KEY_NAME)
        )
    return (str(value),)
