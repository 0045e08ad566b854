"""The anchor file: the dissemination record's head, noted outside the database now and then
as a line `SEQ:HASH time`, so that a later `dissemination audit verify --anchor SEQ:HASH`
(or the next scheduled verification) can tell a cut tail with a rewritten head."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from core.errors import DisseminationError

TAIL_BYTES = 4096


class AnchorFileError(DisseminationError):
    """The anchor file's last line is not an anchor: it was damaged, or written by hand."""


def parse_anchor(text: str) -> tuple[int, str]:
    """SEQ:HASH as `audit head` prints it; ValueError otherwise."""
    seq, _, digest = text.partition(":")
    if not (seq.isascii() and seq.isdigit() and len(digest) == 64):
        raise ValueError(f"expected SEQ:HASH, got {text[:100]!r}")
    int(digest, 16)
    return int(seq), digest


def last_anchor(path: Path) -> tuple[int, str] | None:
    """The anchor on the file's last line; None when there is no file or it is empty. Reads
    only the file's end, so the cost does not grow with the file."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            tail = file.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    lines = tail.strip().splitlines()
    if not lines:
        return None
    try:
        return parse_anchor(lines[-1].split(" ", 1)[0])
    except ValueError as error:
        raise AnchorFileError(f"the last line of {path} is not an anchor: {error}") from None


def append_anchor(path: Path, anchor: tuple[int, str], at: datetime) -> None:
    """Append `SEQ:HASH time` and flush it to the disk (owner-only file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{anchor[0]}:{anchor[1]} {at.astimezone(UTC).isoformat(timespec='seconds')}\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
