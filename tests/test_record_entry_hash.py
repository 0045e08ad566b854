"""An entry's hash is what the record's description says, whatever its fields hold: HMAC-SHA256
under the record's key (plain SHA-256 unkeyed) over the previous hash and the canonical JSON
of the hashed fields (keys sorted, no spaces, characters as they are). Entries already written
verify only while this stays so."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dissemination.controls.record import HASHED_FIELDS, entry_hash
from dissemination.controls.recordkey import RecordKey

TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
FIELDS = st.fixed_dictionaries(
    {
        "seq": st.integers(1, 2**40),
        "at": st.just("2026-12-06T21:00:00.000001+00:00"),
        "alert_id": TEXT,
        "delivery_id": st.none() | TEXT,
        "stakeholder_id": TEXT,
        "organization": st.none() | TEXT,
        "channel": st.sampled_from(["email", "sms", "webhook"]),
        "address": TEXT,
        "outcome": st.sampled_from(["released", "withheld"]),
        "rule": st.lists(TEXT, max_size=3),
        "justification": TEXT,
        "content_sha256": st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
    }
)


def described_hash(prev_hash: str, fields: dict[str, Any], key: bytes | None) -> str:
    canonical = json.dumps(
        {name: fields[name] for name in HASHED_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    message = (prev_hash + canonical).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@given(
    FIELDS,
    st.text("0123456789abcdef", min_size=64, max_size=64),
    st.none() | st.binary(min_size=1, max_size=64),
)
def test_an_entry_hash_is_the_described_one(
    fields: dict[str, Any], prev_hash: str, secret: bytes | None
) -> None:
    key = RecordKey(secret) if secret is not None else None
    assert entry_hash(prev_hash, fields, key) == described_hash(prev_hash, fields, secret)


def test_a_known_entry_keeps_its_hash() -> None:
    """Pinned values, as entries written so far carry them."""
    fields = dict.fromkeys(HASHED_FIELDS) | {
        "seq": 7,
        "alert_id": "a-1",
        "address": "ops@example.org",
        "rule": ["s-1"],
        "justification": "matched by subscription; Zürich",
    }
    keyed = "aa82c6c38dfa5b7b1fe74ecfe38a075b860e91f0219768d45ec77788dda59a83"
    unkeyed = "8a13699d34fe761d5ee0a588f19ebfedbcea29dfbd437db321ca91a7cf939fa8"
    assert entry_hash("0" * 64, fields, RecordKey(b"k" * 32)) == keyed
    assert entry_hash("0" * 64, fields) == unkeyed
