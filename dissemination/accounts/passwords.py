"""Passwords hashed with argon2id (argon2-cffi), hashed and verified in a worker thread so the
event loop keeps serving while the hash runs. Temporary passwords are random and shown once."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

HASHER = PasswordHasher()
MIN_LENGTH = 12


async def hash_password(password: str, hasher: PasswordHasher = HASHER) -> str:
    return await asyncio.to_thread(hasher.hash, password)


def _verify(hasher: PasswordHasher, stored: str, password: str) -> tuple[bool, bool]:
    try:
        hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False, False
    return True, hasher.check_needs_rehash(stored)


async def verify_password(
    stored: str, password: str, hasher: PasswordHasher = HASHER
) -> tuple[bool, bool]:
    """(whether `password` matches `stored`, whether `stored` should be rehashed because the
    hasher's parameters changed since it was made)."""
    return await asyncio.to_thread(_verify, hasher, stored, password)


@functools.cache
def _dummy_hash() -> str:
    return HASHER.hash(secrets.token_urlsafe(16))


async def waste_a_verification(password: str) -> None:
    """Spend the time a verification takes, so an unknown username answers as slowly as a
    wrong password."""
    stored = await asyncio.to_thread(_dummy_hash)
    await verify_password(stored, password)


def temporary_password() -> str:
    """A random password for a new account or a reset: 24 URL-safe characters."""
    return secrets.token_urlsafe(18)
