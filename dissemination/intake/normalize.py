"""Turns schema-valid documents (CAP-JSON and the local kinds) into the normalized Alert model,
applying the fail-closed handling default where the originator set no TLP.

A schema-valid document may still hold a value the model cannot take: a date-time the
parser refuses, or one with no UTC equivalent before year 10000 (the store and every
comparison need one), or a circle radius too large for a float. Those are refused as
`invalid_field` with their path, here, before anything is stored."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.alert import (
    Alert,
    Area,
    Circle,
    Handling,
    Info,
    Kind,
    MsgType,
    NamedValue,
    Reference,
    Status,
    Tlp,
)
from core.clock import parse_moment
from core.errors import ErrorDetail, RejectedInput

TLP_PARAMETER = "TLP"
CAVEAT_PARAMETERS = ("CAVEAT", "CAVEATS")

SAR_BEHAVIOR_LABELS = {
    "breach_attempted_intrusion": "Breach/Attempted Intrusion",
    "misrepresentation": "Misrepresentation",
    "theft_loss_diversion": "Theft/Loss/Diversion",
    "sabotage_tampering_vandalism": "Sabotage/Tampering/Vandalism",
    "cyberattack": "Cyberattack",
    "expressed_or_implied_threat": "Expressed or Implied Threat",
    "aviation_activity": "Aviation Activity",
    "eliciting_information": "Eliciting Information",
    "testing_or_probing_of_security": "Testing or Probing of Security",
    "recruiting_financing": "Recruiting/Financing",
    "photography": "Photography",
    "observation_surveillance": "Observation/Surveillance",
    "materials_acquisition_storage": "Materials Acquisition/Storage",
    "acquisition_of_expertise": "Acquisition of Expertise",
    "weapons_collection_discovery": "Weapons Collection/Discovery",
    "sector_specific_incident": "Sector-Specific Incident",
}


@dataclass(frozen=True, slots=True)
class HandlingDefaults:
    """TLP applied when an alert carries none: fail closed, except CAP scope Public."""

    default_tlp: Tlp
    public_scope_tlp: Tlp


def _invalid(path: str, message: str) -> RejectedInput:
    return RejectedInput("invalid_field", [ErrorDetail(path, message)])


def _moment(value: str, path: str) -> datetime:
    moment = parse_moment(value)
    if moment is None:
        raise _invalid(
            path, f"{value!r} is not a date-time with an offset between years 1 and 9999 UTC"
        )
    return moment


def _time(value: str | None, path: str) -> datetime | None:
    return _moment(value, path) if value else None


def _named(items: Sequence[Mapping[str, str]] | None) -> tuple[NamedValue, ...]:
    return tuple(NamedValue(i["valueName"], i["value"]) for i in items or ())


def _points(text: str) -> tuple[tuple[float, float], ...]:
    pairs = (point.split(",") for point in text.split())
    return tuple((float(lat), float(lon)) for lat, lon in pairs)


def _circle(text: str, path: str) -> Circle:
    centre, radius = text.split()
    lat, lon = centre.split(",")
    circle = Circle(float(lat), float(lon), float(radius))
    if not math.isfinite(circle.radius_km):
        raise _invalid(path, "the radius is too large")
    return circle


def _cap_area(area: Mapping[str, Any], path: str) -> Area:
    return Area(
        description=area["areaDesc"],
        polygons=tuple(_points(p) for p in area.get("polygon", ())),
        circles=tuple(
            _circle(c, f"{path}.circle[{i}]") for i, c in enumerate(area.get("circle", ()))
        ),
        geocodes=_named(area.get("geocode")),
    )


def _cap_info(info: Mapping[str, Any], path: str) -> Info:
    return Info(
        language=info.get("language", "en-US"),
        categories=tuple(info["category"]),
        event=info["event"],
        urgency=info["urgency"],
        severity=info["severity"],
        certainty=info["certainty"],
        headline=info.get("headline"),
        description=info.get("description"),
        instruction=info.get("instruction"),
        sender_name=info.get("senderName"),
        effective=_time(info.get("effective"), f"{path}.effective"),
        onset=_time(info.get("onset"), f"{path}.onset"),
        expires=_time(info.get("expires"), f"{path}.expires"),
        response_types=tuple(info.get("responseType", ())),
        event_codes=_named(info.get("eventCode")),
        parameters=_named(info.get("parameter")),
        areas=tuple(_cap_area(a, f"{path}.area[{i}]") for i, a in enumerate(info.get("area", ()))),
        web=info.get("web"),
        contact=info.get("contact"),
    )


def _cap_references(text: str | None) -> tuple[Reference, ...]:
    references = []
    for triple in (text or "").split():
        parts = triple.split(",")
        if len(parts) != 3:
            raise RejectedInput(
                "schema_violation",
                [ErrorDetail("$.references", f"not sender,identifier,sent: {triple!r}")],
            )
        references.append(Reference(*parts))
    return tuple(references)


def _handling(
    marks: Mapping[str, Any] | None,
    infos: Sequence[Info],
    scope: str | None,
    defaults: HandlingDefaults,
) -> Handling:
    """The effective marks: the strictest TLP found anywhere in the alert (the handling field
    and every TLP parameter of every info block) and the union of every caveat, so a second,
    weaker mark can never widen the audience. Differing TLP marks are kept as the conflict.
    Unmarked, a CAP alert's `scope` Public admits the public default; a local kind passes no
    scope and always gets the default (its scope says nothing of what it holds)."""
    found: list[tuple[str, str]] = []
    if (marks or {}).get("tlp") is not None:
        found.append(("$.handling.tlp", str((marks or {})["tlp"])))
    caveats = list((marks or {}).get("caveats", ()))
    for index, info in enumerate(infos):
        for parameter in info.parameters:
            name = parameter.name.strip().upper()
            if name == TLP_PARAMETER:
                found.append((f"$.info[{index}].parameter.{TLP_PARAMETER}", parameter.value))
            elif name in CAVEAT_PARAMETERS:
                caveats.extend(c.strip().upper() for c in parameter.value.replace(",", " ").split())
    caveat_set = tuple(sorted(set(caveats)))
    if not found:
        fallback = defaults.public_scope_tlp if scope == "Public" else defaults.default_tlp
        return Handling(fallback, caveat_set, tlp_defaulted=True)
    levels = [_tlp(path, text) for path, text in found]
    strictest = max(levels, key=lambda level: level.rank)
    distinct = sorted(set(levels), key=lambda level: level.rank)
    conflict = tuple(level.value for level in distinct) if len(distinct) > 1 else ()
    return Handling(strictest, caveat_set, conflict=conflict)


def _tlp(path: str, text: str) -> Tlp:
    try:
        return Tlp.parse(text)
    except ValueError:
        raise RejectedInput(
            "invalid_handling", [ErrorDetail(path, f"unknown TLP marking {text!r}")]
        ) from None


def alert_from_cap(
    document: Mapping[str, Any], source_format: str, defaults: HandlingDefaults
) -> Alert:
    """A schema-valid CAP-JSON document as an Alert."""
    infos = tuple(
        _cap_info(info, f"$.info[{i}]") for i, info in enumerate(document.get("info", ()))
    )
    return Alert(
        kind=Kind.CAP,
        identifier=document["identifier"],
        sender=document["sender"],
        sent=_moment(document["sent"], "$.sent"),
        sent_text=document["sent"],
        status=Status(document["status"]),
        msg_type=MsgType(document["msgType"]),
        scope=document["scope"],
        handling=_handling(document.get("handling"), infos, document["scope"], defaults),
        infos=infos,
        references=_cap_references(document.get("references")),
        source_format=source_format,
    )


def _local_area(document: Mapping[str, Any]) -> tuple[Area, ...]:
    areas = []
    if area := document.get("area"):
        areas.append(
            Area(
                description=area["description"],
                polygons=tuple(
                    tuple((p[0], p[1]) for p in ring) for ring in area.get("polygons", ())
                ),
                circles=tuple(
                    Circle(c["latitude"], c["longitude"], c["radiusKm"])
                    for c in area.get("circles", ())
                ),
                geocodes=_named(area.get("geocodes")),
            )
        )
    location = document.get("location") or document.get("lastSeen")
    if location and "latitude" in location and "longitude" in location:
        point = Circle(location["latitude"], location["longitude"], 0.0)
        areas.append(
            Area(location.get("description") or location.get("location", ""), circles=(point,))
        )
    return tuple(areas)


def _local_summary(kind: Kind, document: Mapping[str, Any]) -> tuple[str, str, str | None, str]:
    """(category, event, description, default headline) for a local kind."""
    if kind is Kind.SAR:
        label = SAR_BEHAVIOR_LABELS[document["behaviorCategory"]]
        where = document["location"]["description"]
        return (
            "Security",
            f"Suspicious Activity: {label}",
            document["narrative"],
            f"SAR: {label} at {where}",
        )
    if kind is Kind.BOLO:
        reason = document["reason"].replace("_", " ")
        return (
            "Security",
            f"BOLO: {reason}",
            document["details"],
            f"BOLO ({reason}): {document['subjectType']}",
        )
    if kind is Kind.SITUATIONAL_AWARENESS:
        text = "\n\n".join(t for t in (document["summary"], document.get("details")) if t)
        return document.get("category", "Other"), document["event"], text, document["event"]
    text = "\n\n".join(t for t in (document["summary"], document.get("details")) if t)
    return document.get("category", "Other"), "Advisory", text, document["title"]


def alert_from_local(document: Mapping[str, Any], defaults: HandlingDefaults) -> Alert:
    """A schema-valid local-kind document (SAR, BOLO, situational awareness, advisory)."""
    kind = Kind(document["kind"])
    category, event, description, headline = _local_summary(kind, document)
    info = Info(
        language=document.get("language", "en-US"),
        categories=(category,),
        event=event,
        urgency=document.get("urgency", "Unknown"),
        severity=document.get("severity", "Unknown"),
        certainty=document.get("certainty", "Unknown"),
        headline=document.get("headline", headline),
        description=description,
        expires=_time(document.get("expires"), "$.expires"),
        areas=_local_area(document),
    )
    references = tuple(
        Reference(r["sender"], r["identifier"], r["sent"]) for r in document.get("references", ())
    )
    return Alert(
        kind=kind,
        identifier=document["identifier"],
        sender=document["sender"],
        sent=_moment(document["sent"], "$.sent"),
        sent_text=document["sent"],
        status=Status(document["status"]),
        msg_type=MsgType(document["msgType"]),
        scope=document["scope"],
        handling=_sar_marks(
            kind, document, _handling(document.get("handling"), (), None, defaults)
        ),
        infos=(info,),
        references=references,
        source_format="json",
        details={k: v for k, v in document.items() if k not in _ENVELOPE_KEYS},
    )


UNSANITIZED_SAR_CAVEATS = ("LES", "PII")


def _sar_marks(kind: Kind, document: Mapping[str, Any], handling: Handling) -> Handling:
    """A SAR not released in its sanitized form may carry personal data about people who are
    not charged with anything: it goes only to law-enforcement recipients entitled to PII
    (caveats LES and PII are added to whatever the originator marked)."""
    if kind is not Kind.SAR or document.get("sanitized"):
        return handling
    return handling.at_least(Handling(handling.tlp, UNSANITIZED_SAR_CAVEATS))


_ENVELOPE_KEYS = frozenset(
    {"kind", "identifier", "sender", "sent", "status", "msgType", "scope", "references", "handling"}
)
