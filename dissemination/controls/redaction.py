"""PII redaction: what a recipient without PII entitlement receives of an alert.

The schemas mark personal fields with the `"x-pii": true` annotation (names, dates of birth,
identification numbers, addresses, phone numbers, plates, VINs, serial numbers). A recipient
whose clearance does not hold the PII caveat gets the stored document with those fields
removed and a `redaction` entry naming each removed field, which every channel renders as a
"personal data withheld" note. Free text (a BOLO's details, a SAR's narrative) is not
scanned: originators put identities in the marked fields, not in prose.

Redaction runs once per alert and entitlement, never per delivery (`Redactions`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from core.validation import SCHEMA_ID_PREFIX, schema_documents
from dissemination.store.rows import ClaimedRow
from subscriptions.model import Clearance, Stakeholder

PII_CAVEAT = "PII"
EACH = "[]"
"""The path token for every element of an array."""

REDACTION_REASON = "pii_not_entitled"

Path = tuple[str, ...]
Schema = Mapping[str, Any]


def pii_entitled(clearance: Clearance) -> bool:
    """True when the clearance holds the PII caveat."""
    return any(caveat.upper() == PII_CAVEAT for caveat in clearance.caveats)


def _resolve(ref: str, base: str, documents: Mapping[str, Schema]) -> tuple[Schema, str]:
    target, _, fragment = ref.partition("#")
    schema_id = target or base
    node: Any = documents[schema_id]
    for token in filter(None, fragment.split("/")):
        node = node[token]
    return node, schema_id


def _walk(node: Schema, base: str, documents: Mapping[str, Schema], prefix: Path) -> Iterator[Path]:
    """Instance paths under `node` whose property subschema carries `"x-pii": true`.

    Follows $ref, properties, items and allOf/anyOf/oneOf; not if/then/else or not, which
    hold constraints (such as the sanitized-SAR guard) rather than the shape of the data.
    """
    if "$ref" in node:
        target, target_base = _resolve(node["$ref"], base, documents)
        yield from _walk(target, target_base, documents, prefix)
    for name, child in node.get("properties", {}).items():
        if isinstance(child, dict):
            if child.get("x-pii") is True:
                yield (*prefix, name)
            yield from _walk(child, base, documents, (*prefix, name))
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], base, documents, (*prefix, EACH))
    for keyword in ("allOf", "anyOf", "oneOf"):
        for child in node.get(keyword, []):
            yield from _walk(child, base, documents, prefix)


@functools.cache
def pii_paths(schema_name: str) -> frozenset[Path]:
    """The x-pii instance paths of a schema (e.g. ("subjects", "[]", "name") for "bolo");
    empty for a name with no schema."""
    documents = schema_documents()
    schema_id = SCHEMA_ID_PREFIX + schema_name
    if schema_id not in documents:
        return frozenset()
    return frozenset(_walk(documents[schema_id], schema_id, documents, ()))


def dotted(path: Path) -> str:
    """("subjects", "[]", "name") as "subjects[].name"."""
    text = ""
    for token in path:
        text += token if token == EACH or not text else f".{token}"
    return text


@dataclass(frozen=True, slots=True)
class Redacted:
    """A document as a recipient without PII entitlement gets it, and the instance paths of
    the removed fields (e.g. "details.subjects[0].name"); `withheld` is empty when the
    document carried no personal field."""

    document: dict[str, Any]
    withheld: tuple[str, ...]


def _trie(paths: frozenset[Path]) -> dict[str, Any]:
    """Paths as nested dicts; None marks where a path ends (the whole value goes)."""
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for token in path[:-1]:
            node = node.setdefault(token, {})
            if node is None:
                break
        else:
            node[path[-1]] = None
    return root


def _strip(value: Any, trie: dict[str, Any], where: str, withheld: list[str]) -> Any:
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key not in trie:
                kept[key] = item
            elif trie[key] is None:
                withheld.append(f"{where}.{key}")
            else:
                kept[key] = _strip(item, trie[key], f"{where}.{key}", withheld)
        return kept
    if isinstance(value, list) and EACH in trie and trie[EACH] is not None:
        return [_strip(item, trie[EACH], f"{where}[{i}]", withheld) for i, item in enumerate(value)]
    return value


def redact(document: Mapping[str, Any]) -> Redacted:
    """`document` (a stored `Alert.to_json()`) without the x-pii fields of its kind."""
    details = document.get("details")
    paths = pii_paths(str(document.get("kind", "")))
    if not details or not paths:
        return Redacted(dict(document), ())
    withheld: list[str] = []
    stripped = _strip(details, _trie(paths), "details", withheld)
    if not withheld:
        return Redacted(dict(document), ())
    redaction = {"reason": REDACTION_REASON, "withheld": withheld}
    return Redacted({**document, "details": stripped, "redaction": redaction}, tuple(withheld))


CACHE_SIZE = 64


class Redactions:
    """Each alert's redacted document, made once: a fan-out sends one alert to many rows,
    which share the stored document object (the cache checks that identity)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Mapping[str, Any], Redacted]] = {}

    def of(self, alert_id: str, document: Mapping[str, Any]) -> Redacted:
        cached = self._cache.get(alert_id)
        if cached is not None and cached[0] is document:
            return cached[1]
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        redacted = redact(document)
        self._cache[alert_id] = (document, redacted)
        return redacted

    def for_row(self, row: ClaimedRow) -> Redacted | None:
        """The redaction a delivery row's recipient gets (its stakeholder as loaded at claim
        time), or None when the recipient is entitled to PII or nothing personal is in it."""
        return self.for_recipient(row.alert_id, row.document, row.stakeholder)

    def for_recipient(
        self, alert_id: str, document: dict[str, Any], stakeholder: Stakeholder | None
    ) -> Redacted | None:
        """The redaction `stakeholder` gets of the alert (`document`), as `for_row`."""
        if stakeholder is not None and pii_entitled(stakeholder.clearance):
            return None
        redacted = self.of(alert_id, document)
        return redacted if redacted.withheld else None
