"""The content hash of an alert never changes from one version to the next: a redelivered or
re-published alert is told from a conflicting one by comparing its hash with the one stored
when it first came, perhaps years of versions ago. Every valid fixture's hash is pinned in
tests/fixtures/golden/content-hashes.json (`UPDATE_GOLDEN=1` rewrites it, for a deliberate
change only, which then needs a migration of the stored hashes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.alert import Tlp
from dissemination.intake.decoding import DecodeLimits, decode_alerts
from dissemination.intake.normalize import HandlingDefaults
from testbed.alerts import cap_json_bytes
from tests.samples import FIXTURES_DIR

GOLDEN = FIXTURES_DIR / "golden" / "content-hashes.json"
LIMITS = DecodeLimits(1_048_576, 64)
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
TYPES = {".xml": "application/cap+xml", ".json": "application/json"}


def fixtures() -> list[Path]:
    return sorted(
        path
        for folder in ("alerts", "cap/valid", "nws")
        for path in (FIXTURES_DIR / folder).iterdir()
        if path.suffix in TYPES
    )


def hashes() -> dict[str, list[str]]:
    found = {
        str(path.relative_to(FIXTURES_DIR)): [
            alert.content_hash()
            for alert in decode_alerts(path.read_bytes(), TYPES[path.suffix], LIMITS, DEFAULTS)
        ]
        for path in fixtures()
    }
    found["testbed cap_json"] = [
        alert.content_hash()
        for alert in decode_alerts(cap_json_bytes(), "application/json", LIMITS, DEFAULTS)
    ]
    return found


def test_every_fixtures_content_hash_is_the_one_pinned() -> None:
    found = hashes()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    pinned = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert len(pinned) == len(fixtures()) + 1
    for name, values in found.items():
        assert values == pinned[name], f"the content hash of {name} changed"
