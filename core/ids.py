"""Name-based ids: the text of a UUID version 5 (RFC 4122: SHA-1 of a namespace and a name),
written directly from the digest. `str(uuid.uuid5(...))` gives the same text through a UUID
object whose construction costs more than the hash; a fan-out makes one id per row."""

from __future__ import annotations

import hashlib
import uuid


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """`str(uuid.uuid5(namespace, name))`, without the UUID object."""
    named = hashlib.sha1(namespace.bytes + name.encode(), usedforsecurity=False)
    digest = bytearray(named.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
