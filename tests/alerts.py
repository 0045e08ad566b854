"""Builders of alert documents for tests: our own, small and valid unless told otherwise."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.samples import FIXTURES_DIR

TEST_SENDERS = (
    "alerts@fusion.example.gov",
    "analysis@fusion.example.gov",
    "bolo@fusion.example.gov",
    "dispatch@anytown-pd.example.gov",
    "eoc@anytown.example.gov",
    "sar-intake@fusion.example.gov",
    "watch@fusion.example.gov",
)
"""The senders of `cap_json` and of every fixture alert: what test tokens publish as."""


def fixture_document(name: str) -> dict[str, Any]:
    """One of our own JSON fixtures under tests/fixtures/alerts, as a fresh dict."""
    return copy.deepcopy(json.loads((FIXTURES_DIR / "alerts" / name).read_text()))
