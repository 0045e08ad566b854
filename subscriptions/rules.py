"""The subscription rule language: a JSON rule (schema `rule`) parsed into a `Rule`, written back
by `Rule.to_json`, and `rule_matches`, the brute-force predicate that is the ground truth of
matching (the indexed matcher only prunes candidates, then asks the same predicate).

Semantics: an absent field sets no constraint, list values are alternatives, fields are all
required. `lists` is the one field about the stakeholder rather than the alert: the
stakeholder must resolve into one of the named distribution lists. Thresholds hold if one
info block meets all three together; every other info-level field (events, eventCodes,
categories, keywords) may be met by any block. Geography is in `GeoArea`: canonical geocode
keys (see `subscriptions.geocodes`) plus polygons; circles are measured in an
equirectangular projection centred on the circle, which is exact enough at the scale of an
alert and cheap. Polygons crossing the antimeridian are not supported.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import shapely
from shapely.geometry.base import BaseGeometry

from core.alert import Alert, Circle, Kind, MsgType, NamedValue, Status, Tlp
from core.errors import ErrorDetail, RejectedInput
from core.validation import validate
from subscriptions.geocodes import canonical_key, parent_key
from subscriptions.geometry import circle_hits, polygon_of

if TYPE_CHECKING:  # model.py imports this module
    from subscriptions.model import Jurisdiction

Ring = tuple[tuple[float, float], ...]

URGENCY_RANKS: Mapping[str, int] = {
    "Unknown": 0, "Past": 1, "Future": 2, "Expected": 3, "Immediate": 4,
}  # fmt: skip
SEVERITY_RANKS: Mapping[str, int] = {
    "Unknown": 0, "Minor": 1, "Moderate": 2, "Severe": 3, "Extreme": 4,
}  # fmt: skip
CERTAINTY_RANKS: Mapping[str, int] = {
    "Unknown": 0, "Unlikely": 1, "Possible": 2, "Likely": 3, "Observed": 4,
}  # fmt: skip
_FOLDED_URGENCY = {k.casefold(): v for k, v in URGENCY_RANKS.items()}
_FOLDED_SEVERITY = {k.casefold(): v for k, v in SEVERITY_RANKS.items()}
# "Very Likely" is CAP 1.0's spelling of Likely.
_FOLDED_CERTAINTY = {k.casefold(): v for k, v in CERTAINTY_RANKS.items()} | {"very likely": 3}


def urgency_rank(text: str) -> int:
    """Ordinal of a CAP urgency; anything unrecognised ranks as Unknown (0), the lowest."""
    return _FOLDED_URGENCY.get(text.strip().casefold(), 0)


def severity_rank(text: str) -> int:
    return _FOLDED_SEVERITY.get(text.strip().casefold(), 0)


def certainty_rank(text: str) -> int:
    return _FOLDED_CERTAINTY.get(text.strip().casefold(), 0)


def _rank_name(ranks: Mapping[str, int], rank: int) -> str:
    return next(name for name, value in ranks.items() if value == rank)


# ---- areas -------------------------------------------------------------------------------


class JurisdictionArea(Enum):
    """The rule's area is the subscribing stakeholder's jurisdiction, resolved at match time."""

    JURISDICTION = "jurisdiction"


JURISDICTION = JurisdictionArea.JURISDICTION
NO_KEYS: frozenset[str] = frozenset()
"""Shared by every area without geocodes (most stakeholders'): an empty frozenset is 216
bytes, and a matcher holds two for each of its 100,000 stakeholders."""


@dataclass(frozen=True, slots=True)
class GeoArea:
    """Geocodes and polygons, with their canonical keys and shapes derived once."""

    geocodes: tuple[NamedValue, ...] = ()
    polygons: tuple[Ring, ...] = ()
    keys: frozenset[str] = field(init=False, repr=False, compare=False)
    parents: frozenset[str] = field(init=False, repr=False, compare=False)
    shapes: tuple[BaseGeometry, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = frozenset(k for g in self.geocodes if (k := canonical_key(g.name, g.value)))
        parents = frozenset(p for k in keys if (p := parent_key(k))) or NO_KEYS
        keys = keys or NO_KEYS
        shapes = tuple(s for ring in self.polygons if (s := polygon_of(ring)) is not None)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "shapes", shapes)

    @property
    def is_empty(self) -> bool:
        """Nothing can ever intersect it."""
        return not self.keys and not self.shapes


@lru_cache(maxsize=1 << 16)
def jurisdiction_area(jurisdiction: Jurisdiction) -> GeoArea:
    """A stakeholder's jurisdiction as a GeoArea, cached (for `rule_matches` and the brute
    force; the Matcher keeps its own): the keys and shapes are derived once per jurisdiction."""
    return GeoArea(jurisdiction.geocodes, jurisdiction.polygons)


# ---- the alert as the predicate sees it ----------------------------------------------------

_WORD = re.compile(r"\w+")


def words_of(text: str) -> tuple[str, ...]:
    """Case-folded words: runs of letters, digits and underscores, in Unicode's composed form
    (NFC) before and after folding, so an accent written as a combining mark (as some feeds
    and keyboards write it) neither splits a word nor keeps it from matching."""
    if text.isascii():
        return tuple(_WORD.findall(text.casefold()))
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())
    return tuple(_WORD.findall(folded))


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What the rules look at in an alert, normalized once per alert."""

    kind: Kind
    sender: str
    status: Status
    msg_type: MsgType
    tlp: Tlp
    caveats: frozenset[str]
    categories: frozenset[str]
    events: frozenset[str]
    event_codes: frozenset[str]
    ranks: tuple[tuple[int, int, int], ...]
    texts: tuple[tuple[str, ...], ...]
    words: frozenset[str]
    geo_keys: frozenset[str]
    geo_parents: frozenset[str]
    polygons: tuple[BaseGeometry, ...]
    circles: tuple[Circle, ...]

    @classmethod
    def of(cls, alert: Alert) -> AlertFacts:
        infos = alert.infos
        areas = [area for info in infos for area in info.areas]
        texts = tuple(
            words_of(text) for info in infos for text in (info.headline, info.description) if text
        )
        geo_keys = frozenset(
            k for a in areas for g in a.geocodes if (k := canonical_key(g.name, g.value))
        )
        return cls(
            kind=alert.kind,
            sender=alert.sender.casefold(),
            status=alert.status,
            msg_type=alert.msg_type,
            tlp=alert.handling.tlp,
            caveats=frozenset(c.upper() for c in alert.handling.caveats),
            categories=frozenset(c for info in infos for c in info.categories),
            events=frozenset(info.event.strip().casefold() for info in infos),
            event_codes=frozenset(
                code.value.strip().upper()
                for info in infos
                for code in info.event_codes
                if code.name.strip().upper() == "SAME"
            ),
            ranks=tuple(
                (urgency_rank(i.urgency), severity_rank(i.severity), certainty_rank(i.certainty))
                for i in infos
            ),
            texts=texts,
            words=frozenset(w for text in texts for w in text),
            geo_keys=geo_keys,
            geo_parents=frozenset(p for k in geo_keys if (p := parent_key(k))),
            polygons=tuple(
                s
                for a in areas
                for r in a.polygons
                if (s := polygon_of(r, prepare=False)) is not None
            ),
            circles=tuple(c for a in areas for c in a.circles),
        )


def _phrase_in(phrase: tuple[str, ...], facts: AlertFacts) -> bool:
    if not facts.words.issuperset(phrase):
        return False
    if len(phrase) == 1:
        return True
    n = len(phrase)
    return any(
        text[i : i + n] == phrase
        for text in facts.texts
        for i in range(len(text) - n + 1)
        if text[i] == phrase[0]
    )


def area_matches(area: GeoArea, facts: AlertFacts) -> bool:
    """A geocode names the same place (or its state), or a polygon or circle intersects."""
    keys = area.keys
    if keys and (
        not facts.geo_keys.isdisjoint(keys)
        or not facts.geo_parents.isdisjoint(keys)
        or not facts.geo_keys.isdisjoint(area.parents)
    ):
        return True
    for shape in area.shapes:
        if any(shape.intersects(polygon) for polygon in facts.polygons):
            return True
        if any(circle_hits(circle, shape) for circle in facts.circles):
            return True
    return False


# ---- the rule ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed rule in canonical form (None = no constraint): events and senders case-folded,
    event codes upper-case, keywords as tuples of case-folded words, thresholds as ranks."""

    kinds: frozenset[Kind] | None = None
    events: frozenset[str] | None = None
    event_codes: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    senders: frozenset[str] | None = None
    statuses: frozenset[Status] | None = None
    msg_types: frozenset[MsgType] | None = None
    min_urgency: int | None = None
    min_severity: int | None = None
    min_certainty: int | None = None
    area: JurisdictionArea | GeoArea | None = None
    keywords: frozenset[tuple[str, ...]] | None = None
    tlp: frozenset[Tlp] | None = None
    caveats: frozenset[str] | None = None
    lists: frozenset[str] | None = None
    """Distribution list ids: the stakeholder must resolve into one of them (an audience
    restriction, decided by the stakeholder's memberships, not by the alert)."""
    thresholds: tuple[int, int, int] | None = field(init=False, repr=False, compare=False)
    """(urgency, severity, certainty) ranks to meet in one info block, absent ones as 0."""

    def __post_init__(self) -> None:
        ranks = (self.min_urgency, self.min_severity, self.min_certainty)
        u, s, c = ranks
        thresholds = None if ranks == (None, None, None) else (u or 0, s or 0, c or 0)
        object.__setattr__(self, "thresholds", thresholds)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Rule:
        """Parse a rule; RejectedInput("schema_violation") with JSON paths if it is invalid."""
        validate("rule", document)
        area = document.get("area")
        geo = None if area is None or area == "jurisdiction" else _parse_area(area)
        return cls(
            kinds=_set(document, "kinds", Kind),
            events=_set(document, "events", lambda s: s.strip().casefold()),
            event_codes=_set(document, "eventCodes", str.upper),
            categories=_set(document, "categories", str),
            senders=_set(document, "senders", str.casefold),
            statuses=_set(document, "statuses", Status),
            msg_types=_set(document, "msgTypes", MsgType),
            min_urgency=_rank(document, "minUrgency", URGENCY_RANKS),
            min_severity=_rank(document, "minSeverity", SEVERITY_RANKS),
            min_certainty=_rank(document, "minCertainty", CERTAINTY_RANKS),
            area=JURISDICTION if area == "jurisdiction" else geo,
            keywords=_set(document, "keywords", words_of),
            tlp=_set(document, "tlp", Tlp),
            caveats=_set(document, "caveats", str),
            lists=_set(document, "lists", str),
        )

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON of the rule; `Rule.from_json(rule.to_json()) == rule`."""
        document: dict[str, Any] = {}
        sets: tuple[tuple[str, Iterable[str] | None], ...] = (
            ("kinds", None if self.kinds is None else (k.value for k in self.kinds)),
            ("events", self.events),
            ("eventCodes", self.event_codes),
            ("categories", self.categories),
            ("senders", self.senders),
            ("statuses", None if self.statuses is None else (s.value for s in self.statuses)),
            ("msgTypes", None if self.msg_types is None else (m.value for m in self.msg_types)),
        )
        for name, values in sets:
            if values is not None:
                document[name] = sorted(values)
        for name, rank, ranks in (
            ("minUrgency", self.min_urgency, URGENCY_RANKS),
            ("minSeverity", self.min_severity, SEVERITY_RANKS),
            ("minCertainty", self.min_certainty, CERTAINTY_RANKS),
        ):
            if rank is not None:
                document[name] = _rank_name(ranks, rank)
        if self.area is JURISDICTION:
            document["area"] = "jurisdiction"
        elif isinstance(self.area, GeoArea):
            document["area"] = _area_json(self.area)
        if self.keywords is not None:
            document["keywords"] = sorted(" ".join(words) for words in self.keywords)
        if self.tlp is not None:
            document["tlp"] = [t.value for t in sorted(self.tlp, key=lambda t: t.rank)]
        if self.caveats is not None:
            document["caveats"] = sorted(self.caveats)
        if self.lists is not None:
            document["lists"] = sorted(self.lists)
        return document


def _set(document: Mapping[str, Any], name: str, convert: Any) -> frozenset[Any] | None:
    values = document.get(name)
    return None if values is None else frozenset(convert(v) for v in values)


def _rank(document: Mapping[str, Any], name: str, ranks: Mapping[str, int]) -> int | None:
    value = document.get(name)
    return None if value is None else ranks[value]


def _parse_area(area: Mapping[str, Any]) -> GeoArea:
    """The explicit area, checked beyond what the schema can say: each geocode must name a
    place, each ring must be closed and simple."""
    errors: list[ErrorDetail] = []
    geocodes: set[tuple[str, str]] = set()
    for i, code in enumerate(area.get("geocodes", ())):
        name, value = code["valueName"].upper(), code["value"].strip().upper()
        if canonical_key(name, value) is None:
            errors.append(ErrorDetail(f"$.area.geocodes[{i}].value", f"not a {name} code"))
        geocodes.add((name, value))
    rings: list[Ring] = []
    for i, points in enumerate(area.get("polygons", ())):
        ring = tuple((float(lat), float(lon)) for lat, lon in points)
        rings.append(ring)
        if ring[0] != ring[-1]:
            errors.append(ErrorDetail(f"$.area.polygons[{i}]", "ring not closed: first != last"))
            continue
        shape = shapely.Polygon([(lon, lat) for lat, lon in ring])
        if not shape.is_valid:
            reason = shapely.is_valid_reason(shape)
            errors.append(ErrorDetail(f"$.area.polygons[{i}]", f"not a simple ring: {reason}"))
    if errors:
        raise RejectedInput("schema_violation", errors)
    return GeoArea(tuple(NamedValue(n, v) for n, v in sorted(geocodes)), tuple(rings))


def _area_json(area: GeoArea) -> dict[str, Any]:
    document: dict[str, Any] = {}
    if area.geocodes:
        document["geocodes"] = [{"valueName": g.name, "value": g.value} for g in area.geocodes]
    if area.polygons:
        document["polygons"] = [[[lat, lon] for lat, lon in ring] for ring in area.polygons]
    return document


# ---- the predicate -------------------------------------------------------------------------


def facts_match(
    rule: Rule,
    facts: AlertFacts,
    jurisdiction: GeoArea | None,
    memberships: frozenset[str] = frozenset(),
) -> bool:
    """The predicate itself, on an alert's facts; `jurisdiction` resolves area "jurisdiction"
    and `memberships` (the lists the stakeholder resolves into) decides `lists`. Cheap set
    tests first, geometry last."""
    if rule.lists is not None and rule.lists.isdisjoint(memberships):
        return False
    if rule.kinds is not None and facts.kind not in rule.kinds:
        return False
    if rule.statuses is not None and facts.status not in rule.statuses:
        return False
    if rule.msg_types is not None and facts.msg_type not in rule.msg_types:
        return False
    if rule.senders is not None and facts.sender not in rule.senders:
        return False
    if rule.tlp is not None and facts.tlp not in rule.tlp:
        return False
    if rule.caveats is not None and rule.caveats.isdisjoint(facts.caveats):
        return False
    if rule.categories is not None and rule.categories.isdisjoint(facts.categories):
        return False
    if rule.events is not None and rule.events.isdisjoint(facts.events):
        return False
    if rule.event_codes is not None and rule.event_codes.isdisjoint(facts.event_codes):
        return False
    if rule.thresholds is not None:
        u, s, c = rule.thresholds
        for fu, fs, fc in facts.ranks:
            if fu >= u and fs >= s and fc >= c:
                break
        else:
            return False
    if rule.keywords is not None and not any(_phrase_in(k, facts) for k in rule.keywords):
        return False
    if rule.area is None:
        return True
    area = jurisdiction if rule.area is JURISDICTION else rule.area
    return isinstance(area, GeoArea) and area_matches(area, facts)


def rule_matches(
    rule: Rule,
    alert: Alert,
    jurisdiction: Jurisdiction,
    memberships: frozenset[str] = frozenset(),
) -> bool:
    """Whether `alert` satisfies `rule` for a stakeholder with `jurisdiction` who resolves
    into the lists `memberships`: the reference."""
    area = jurisdiction_area(jurisdiction) if rule.area is JURISDICTION else None
    return facts_match(rule, AlertFacts.of(alert), area, memberships)
