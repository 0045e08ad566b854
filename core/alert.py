"""The normalized Alert model that every accepted format (CAP XML/JSON, NWS GeoJSON, local kinds)
becomes, and the enums of its vocabulary."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.ids import uuid5_text

ALERT_ID_NAMESPACE = uuid.UUID("0f5c7f0e-8d0a-5b7e-9a53-3b8a1c6f2d41")


class Status(StrEnum):
    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"
    DRAFT = "Draft"


URGENT_SEVERITIES = frozenset({"Extreme", "Severe"})


class MsgType(StrEnum):
    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"
    ACK = "Ack"
    ERROR = "Error"


class Kind(StrEnum):
    CAP = "cap"
    SAR = "sar"
    BOLO = "bolo"
    SITUATIONAL_AWARENESS = "situational_awareness"
    ADVISORY = "advisory"


class Tlp(StrEnum):
    """FIRST TLP 2.0, ordered from least to most restrictive."""

    CLEAR = "CLEAR"
    GREEN = "GREEN"
    AMBER = "AMBER"
    AMBER_STRICT = "AMBER+STRICT"
    RED = "RED"

    @property
    def rank(self) -> int:
        return _TLP_ORDER.index(self)

    @classmethod
    def parse(cls, text: str) -> Tlp:
        """Read a marking such as "TLP:AMBER", "amber+strict" or legacy "WHITE" (= CLEAR)."""
        value = text.strip().upper().removeprefix("TLP:").strip()
        if value == "WHITE":
            return cls.CLEAR
        return cls(value)


_TLP_ORDER = (Tlp.CLEAR, Tlp.GREEN, Tlp.AMBER, Tlp.AMBER_STRICT, Tlp.RED)


@dataclass(frozen=True, slots=True)
class Handling:
    """Sharing limits set by the originator: a TLP level and caveats (LES, PII, ...).
    `conflict` lists the differing TLP marks the alert carried when it carried more than one
    (the strictest is `tlp`); it is kept with the alert, not part of its content."""

    tlp: Tlp
    caveats: tuple[str, ...] = ()
    tlp_defaulted: bool = False
    conflict: tuple[str, ...] = field(default=(), compare=False, metadata={"content": False})

    def at_least(self, other: Handling) -> Handling:
        """These marks raised to `other`'s where `other` is stricter: the higher TLP, and
        every caveat of either."""
        tlp = other.tlp if other.tlp.rank > self.tlp.rank else self.tlp
        added = tuple(sorted(set(other.caveats) - set(self.caveats)))
        if tlp is self.tlp and not added:
            return self
        return Handling(
            tlp, self.caveats + added, self.tlp_defaulted and tlp is self.tlp, self.conflict
        )


@dataclass(frozen=True, slots=True)
class Reference:
    """A pointer to an earlier alert: CAP's `sender,identifier,sent` triple."""

    sender: str
    identifier: str
    sent: str

    @property
    def alert_id(self) -> str:
        return alert_id_for(self.sender, self.identifier, self.sent)


@dataclass(frozen=True, slots=True)
class NamedValue:
    """A CAP valueName/value pair (parameter, eventCode, geocode)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Circle:
    latitude: float
    longitude: float
    radius_km: float


@dataclass(frozen=True, slots=True)
class Area:
    """A described area with optional polygons ((lat, lon) rings), circles and geocodes."""

    description: str
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()
    circles: tuple[Circle, ...] = ()
    geocodes: tuple[NamedValue, ...] = ()


@dataclass(frozen=True, slots=True)
class Info:
    """One CAP info block: what happened, how bad, what to do, where."""

    language: str
    categories: tuple[str, ...]
    event: str
    urgency: str
    severity: str
    certainty: str
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    sender_name: str | None = None
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    response_types: tuple[str, ...] = ()
    event_codes: tuple[NamedValue, ...] = ()
    parameters: tuple[NamedValue, ...] = ()
    areas: tuple[Area, ...] = ()
    web: str | None = None
    contact: str | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert, whatever format it came in. `id` is derived from (sender, identifier, sent)."""

    kind: Kind
    identifier: str
    sender: str
    sent: datetime
    sent_text: str
    status: Status
    msg_type: MsgType
    scope: str
    handling: Handling
    infos: tuple[Info, ...]
    references: tuple[Reference, ...] = ()
    source_format: str = "json"
    details: dict[str, Any] = field(default_factory=dict, compare=False)
    id: str = field(init=False, repr=False, compare=False, metadata={"content": False})
    """Derived from (sender, identifier, sent) once, when the alert is made: the intake path
    reads it about ten times an alert, and each derivation is a UUID5 (4 µs)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", alert_id_for(self.sender, self.identifier, self.sent_text))

    @property
    def expires(self) -> datetime | None:
        """The latest expiry over the info blocks; None if any block never expires."""
        values = [info.expires for info in self.infos]
        if not values or any(v is None for v in values):
            return None
        return max(v for v in values if v is not None)

    @property
    def headline(self) -> str | None:
        return next((i.headline for i in self.infos if i.headline), None)

    @property
    def urgent(self) -> bool:
        """An actual alert of an imminent threat (`imminent_threat`): its deliveries go ahead
        of others queued."""
        return imminent_threat(self.status, ((i.urgency, i.severity) for i in self.infos))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the normalized alert (datetimes as ISO 8601)."""
        document: dict[str, Any] = _jsonable(self)
        return document | {"id": self.id}

    def content_hash(self) -> str:
        """SHA-256 over the normalized content: equal for byte-different renderings of the same
        alert, different when anything a recipient would see differs."""
        return content_hash_of(self.to_json())


def imminent_threat(status: str, blocks: Iterable[tuple[str, str]]) -> bool:
    """Whether an alert of `status` whose info blocks have these (urgency, severity) is an
    actual alert of an imminent threat: a block whose urgency is Immediate and whose severity
    is Extreme or Severe."""
    return status == Status.ACTUAL and any(
        urgency == "Immediate" and severity in URGENT_SEVERITIES for urgency, severity in blocks
    )


def document_is_urgent(document: dict[str, Any]) -> bool:
    """`Alert.urgent` for a stored alert's `to_json()` document."""
    blocks = ((info["urgency"], info["severity"]) for info in document.get("infos", ()))
    return imminent_threat(document["status"], blocks)


def content_hash_of(document: dict[str, Any]) -> str:
    """The content hash of an alert's `to_json()` document (see Alert.content_hash)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def alert_id_for(sender: str, identifier: str, sent: str) -> str:
    """The stable alert id: a UUIDv5 of CAP's uniqueness key, so re-publishes map to one id."""
    return uuid5_text(ALERT_ID_NAMESPACE, f"{sender},{identifier},{sent}")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        content = (f.name for f in fields(cls) if f.metadata.get("content", True))
        names = _FIELD_NAMES[cls] = tuple(content)
    return names


_PLAIN = frozenset({str, int, float, bool, type(None)})
"""Types whose values are JSON as they are, told by `type(...)` alone: an alert's polygons
are many pairs of floats, and a set lookup costs less than a call and four isinstance."""


def _jsonable(value: Any) -> Any:
    """Plain JSON values for a tree of our frozen dataclasses (what `dataclasses.asdict` gives,
    without its deep copies, which cost most of the time on the intake path)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is tuple or kind is list:
        return [v if type(v) in _PLAIN else _jsonable(v) for v in value]
    if isinstance(value, str | int | float):  # enums
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return {
        name: item if type(item) in _PLAIN else _jsonable(item)
        for name in _field_names(kind)
        for item in (getattr(value, name),)
    }
