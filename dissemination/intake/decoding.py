"""From raw bytes to validated, normalized alerts: pick the format by content type (sniffing
when there is none), decode safely, validate against the kind's schema, normalize.

    bytes ─┬─ CAP XML (1.1, 1.2) ──── capxml ──┐
           ├─ NWS GeoJSON ─────────── nws ─────┼─> CAP-JSON ─> schema "cap" ─┐
           ├─ CAP-JSON ────────────────────────┘                              ├─> Alert(s)
           └─ local JSON kinds (sar, bolo, ...) ─────────> schema "<kind>" ──┘
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.alert import Alert, Kind, Tlp
from core.errors import ErrorDetail, RejectedInput
from core.strictjson import loads_strict
from core.validation import schema_errors
from dissemination.intake.capxml import cap_document_from_xml, looks_like_xml
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap, alert_from_local
from dissemination.intake.nws import cap_documents_from_nws
from dissemination.settings import IntakeSettings
from dissemination.store.tables import CONTENT_TYPE_LENGTH

XML_TYPES = frozenset({"application/cap+xml", "application/xml", "text/xml"})
JSON_TYPES = frozenset({"application/json", "application/geo+json", "application/ld+json"})
SNIFFED_TYPES = frozenset({"", "application/octet-stream"})
LOCAL_KINDS = frozenset(k.value for k in Kind if k is not Kind.CAP)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on untrusted input."""

    max_bytes: int
    max_depth: int


def intake_rules(settings: IntakeSettings) -> tuple[DecodeLimits, HandlingDefaults]:
    """The limits and the handling defaults `settings` set for every inbound alert."""
    limits = DecodeLimits(settings.max_body_bytes, settings.max_json_depth)
    defaults = HandlingDefaults(
        Tlp.parse(settings.default_tlp), Tlp.parse(settings.public_scope_tlp)
    )
    return limits, defaults


@dataclass(frozen=True, slots=True)
class Document:
    """One alert document before normalization: which schema governs it, and its body."""

    schema: str
    body: Mapping[str, Any]
    source_format: str
    path: str = "$"


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header value, lower-cased."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _sniff(body: bytes) -> str:
    if looks_like_xml(body):  # in any encoding XML allows
        return "xml"
    if body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        return "json"
    raise RejectedInput("unrecognized_format", "body is neither XML nor JSON")


def _check_content_type(content_type: str | None) -> None:
    """Refuse a Content-Type the store could not keep with the payload (it is kept as given)."""
    if content_type is None:
        return
    if len(content_type) > CONTENT_TYPE_LENGTH or not content_type.isprintable():
        raise RejectedInput(
            "unsupported_content_type",
            f"a content type must be printable and at most {CONTENT_TYPE_LENGTH} characters",
        )


def _json_documents(document: Any) -> list[Document]:
    if not isinstance(document, dict):
        raise RejectedInput("unrecognized_format", "top-level JSON value must be an object")
    if "kind" in document:
        kind = document["kind"]
        if not isinstance(kind, str) or kind not in LOCAL_KINDS:
            raise RejectedInput(
                "unknown_kind",
                [ErrorDetail("$.kind", f"{kind!r} is not one of {sorted(LOCAL_KINDS)}")],
            )
        return [Document(kind, document, "json")]
    if document.get("type") in ("FeatureCollection", "Feature"):
        many = document.get("type") == "FeatureCollection"
        return [
            Document("cap", cap, "nws-geojson", f"$.features[{i}]" if many else "$")
            for i, cap in enumerate(cap_documents_from_nws(document))
        ]
    if "identifier" in document:
        return [Document("cap", document, "cap-json")]
    raise RejectedInput(
        "unrecognized_format", "JSON object is not CAP, NWS GeoJSON or a local kind"
    )


def decode_documents(body: bytes, content_type: str | None, limits: DecodeLimits) -> list[Document]:
    """Split a message body into alert documents; raise RejectedInput with a named reason."""
    if len(body) > limits.max_bytes:
        raise RejectedInput(
            "body_too_large", f"{len(body)} bytes exceeds the {limits.max_bytes} limit"
        )
    _check_content_type(content_type)
    declared = media_type(content_type)
    if declared in XML_TYPES:
        family = "xml"
    elif declared in JSON_TYPES:
        family = "json"
    elif declared in SNIFFED_TYPES:
        family = _sniff(body)
    else:
        raise RejectedInput(
            "unsupported_content_type", f"content type {declared!r} is not accepted"
        )
    if family == "xml":
        return [Document("cap", cap_document_from_xml(body, max_bytes=limits.max_bytes), "cap-xml")]
    return _json_documents(
        loads_strict(body, max_bytes=limits.max_bytes, max_depth=limits.max_depth)
    )


def _prefixed(path: str, detail: ErrorDetail) -> ErrorDetail:
    return detail if path == "$" else ErrorDetail(path + detail.path[1:], detail.message)


def _normalized(document: Document, defaults: HandlingDefaults) -> Alert:
    """The document as an Alert; a refusal names the path in the whole body."""
    try:
        if document.schema == "cap":
            return alert_from_cap(document.body, document.source_format, defaults)
        return alert_from_local(document.body, defaults)
    except RejectedInput as rejected:
        if document.path == "$":
            raise
        errors = [_prefixed(document.path, detail) for detail in rejected.errors]
        raise RejectedInput(rejected.reason, errors) from None


def decode_alerts(
    body: bytes, content_type: str | None, limits: DecodeLimits, defaults: HandlingDefaults
) -> list[Alert]:
    """Every alert in `body`, validated and normalized; all or nothing."""
    documents = decode_documents(body, content_type, limits)
    errors = [
        _prefixed(doc.path, detail)
        for doc in documents
        for detail in schema_errors(doc.schema, doc.body)
    ]
    if errors:
        raise RejectedInput("schema_violation", errors)
    return [_normalized(doc, defaults) for doc in documents]
