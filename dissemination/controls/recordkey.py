"""The dissemination record's key: where it comes from, and what identifies it.

The key is never in the database, so someone who can write the database cannot write an
entry that verifies. It comes from the `record.key` setting (DISSEMINATION_RECORD_KEY); on
the embedded SQLite store, when unset, a random key is made once in the data directory
(readable by its owner only). A shared PostgreSQL store needs the setting: every instance
must chain with the same key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from dissemination.settings import Settings

KEY_FILE = "record.key"
MIN_KEY_LENGTH = 32


@dataclass(frozen=True, slots=True)
class RecordKey:
    """An HMAC key for the record, and its id (a digest prefix, safe to store with entries)."""

    secret: bytes

    @property
    def id(self) -> str:
        return hashlib.sha256(b"record-key:" + self.secret).hexdigest()[:16]


def record_key(settings: Settings) -> RecordKey:
    """The key the settings name, or the embedded store's key file; ConfigError when a shared
    store has none, or the key is too short to be a key."""
    configured = settings.record.key.strip()
    if configured:
        if len(configured) < MIN_KEY_LENGTH:
            raise ConfigError("record.key", "***", f"needs at least {MIN_KEY_LENGTH} characters")
        return RecordKey(configured.encode())
    if not settings.store.url.startswith("sqlite"):
        raise ConfigError(
            "record.key",
            "",
            "a shared store needs DISSEMINATION_RECORD_KEY, the same on every instance",
        )
    return RecordKey(_key_file(settings.data_path / KEY_FILE))


def _key_file(path: Path) -> bytes:
    """The key kept in `path`, made (owner-only) the first time; ConfigError if the file
    holds fewer than `MIN_KEY_LENGTH` characters (anyone could then compute the MACs).

    A new key is written whole to a file of its own and then linked into place, so no process
    ever reads a key file half written, and of two processes making one, the first to link
    wins and the other reads its key."""
    try:
        return _checked(path, path.read_bytes().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(key + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(draft, path)
    except FileExistsError:  # another process made it first
        return _checked(path, path.read_bytes().strip())
    finally:
        draft.unlink(missing_ok=True)
    return key


def _checked(path: Path, key: bytes) -> bytes:
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            "record.key",
            str(path),
            f"the key file holds {len(key)} characters, fewer than {MIN_KEY_LENGTH}: restore"
            " the key it held, or, for a record not yet begun, remove the file to make a new one",
        )
    return key
