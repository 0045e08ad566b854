"""Decoding of api.weather.gov GeoJSON alerts into the CAP-JSON form of `schemas/cap.json`.

Owns the mapping from the NWS API's alert properties (its own JSON rendering of CAP 1.2)
onto CAP-JSON: one CAP-JSON document per GeoJSON feature. Anything of the wrong JSON type
is rejected as "invalid_nws_geojson" with its path; a missing required field is left out
for the schema to report. NWS-only properties (`ends`, `affectedZones`, `@id`, ...) have no
CAP element and are dropped; `ends` also travels as the `eventEndingTime` parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from core.errors import ErrorDetail, RejectedInput

REASON = "invalid_nws_geojson"

_HEADER_FIELDS: Mapping[str, str] = {
    "id": "identifier",
    "sender": "sender",
    "sent": "sent",
    "status": "status",
    "messageType": "msgType",
}
_INFO_FIELDS = (
    "event",
    "urgency",
    "severity",
    "certainty",
    "effective",
    "onset",
    "expires",
    "senderName",
    "headline",
    "description",
    "instruction",
)
_INFO_LISTS: Mapping[str, str] = {"category": "category", "response": "responseType"}
_INFO_PAIRS: Mapping[str, str] = {"eventCode": "eventCode", "parameters": "parameter"}


def cap_documents_from_nws(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One CAP-JSON document per feature of an NWS FeatureCollection, or of a single Feature."""
    if not isinstance(document, Mapping):
        raise _rejected("$", "an NWS alert document must be a JSON object")
    kind = document.get("type")
    if kind == "Feature":
        return [_from_feature(document, "$")]
    if kind != "FeatureCollection":
        raise _rejected("$.type", f"expected 'FeatureCollection' or 'Feature', got {kind!r}")
    features = document.get("features")
    if not isinstance(features, list) or not features:
        raise _rejected("$.features", "a FeatureCollection needs a non-empty features array")
    return [_from_feature(feature, f"$.features[{i}]") for i, feature in enumerate(features)]


def _rejected(path: str, message: str) -> RejectedInput:
    return RejectedInput(REASON, [ErrorDetail(path, message)])


def _from_feature(feature: object, path: str) -> dict[str, Any]:
    if not isinstance(feature, Mapping):
        raise _rejected(path, "a feature must be a JSON object")
    properties = feature.get("properties")
    if not isinstance(properties, Mapping):
        raise _rejected(f"{path}.properties", "a feature needs a properties object")
    at = f"{path}.properties"
    alert: dict[str, Any] = {}
    for key, name in _HEADER_FIELDS.items():
        _put(alert, name, _string(properties, key, at))
    alert["scope"] = "Public"
    _put(alert, "references", _references(properties.get("references"), f"{at}.references"))
    alert["info"] = [_info(properties, feature.get("geometry"), path)]
    alert["capVersion"] = "1.2"
    return alert


def _info(properties: Mapping[str, Any], geometry: object, path: str) -> dict[str, Any]:
    at = f"{path}.properties"
    info: dict[str, Any] = {}
    for key, name in _INFO_LISTS.items():
        value = _string(properties, key, at)
        _put(info, name, None if value is None else [value])
    for key in _INFO_FIELDS:
        _put(info, key, _string(properties, key, at))
    for key, name in _INFO_PAIRS.items():
        _put(info, name, _pairs(properties.get(key), f"{at}.{key}"))
    area: dict[str, Any] = {}
    _put(area, "areaDesc", _string(properties, "areaDesc", at))
    _put(area, "polygon", _polygons(geometry, f"{path}.geometry"))
    _put(area, "geocode", _pairs(properties.get("geocode"), f"{at}.geocode"))
    if area:
        info["area"] = [area]
    return info


def _put(target: dict[str, Any], name: str, value: object) -> None:
    """Sets `name` unless the value is null or empty: CAP-JSON leaves out what is absent."""
    if value is not None and value != "" and value != []:
        target[name] = value


def _string(properties: Mapping[str, Any], key: str, path: str) -> str | None:
    value = properties.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _rejected(f"{path}.{key}", f"expected a string or null, got {type(value).__name__}")


def _references(value: object, path: str) -> str | None:
    """CAP's "sender,identifier,sent sender,identifier,sent ..." from NWS reference objects."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise _rejected(path, "references must be an array")
    triples = []
    for i, reference in enumerate(value):
        at = f"{path}[{i}]"
        if not isinstance(reference, Mapping):
            raise _rejected(at, "a reference must be an object")
        parts = [_string(reference, key, at) for key in ("sender", "identifier", "sent")]
        if None in parts:
            raise _rejected(at, "a reference needs sender, identifier and sent")
        triples.append(",".join(str(part) for part in parts))
    return " ".join(triples)


def _pairs(value: object, path: str) -> list[dict[str, str]] | None:
    """CAP valueName/value pairs from an NWS {name: [values]} object."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _rejected(path, "expected an object of name: [values]")
    pairs: list[dict[str, str]] = []
    for name, values in value.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _rejected(f"{path}.{name}", "expected an array of strings")
        pairs.extend({"valueName": str(name), "value": v} for v in values)
    return pairs


def _polygons(geometry: object, path: str) -> list[str] | None:
    """CAP polygons from a GeoJSON Polygon or MultiPolygon: the outer ring of each.

    CAP has no holes, so inner rings are dropped and the alert area is the outer ring.
    """
    if geometry is None:
        return None
    if not isinstance(geometry, Mapping):
        raise _rejected(path, "geometry must be an object or null")
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        return [_outer_ring(coordinates, f"{path}.coordinates")]
    if kind != "MultiPolygon":
        raise _rejected(f"{path}.type", f"expected 'Polygon' or 'MultiPolygon', got {kind!r}")
    if not isinstance(coordinates, list) or not coordinates:
        raise _rejected(f"{path}.coordinates", "a MultiPolygon needs an array of polygons")
    return [
        _outer_ring(polygon, f"{path}.coordinates[{i}]") for i, polygon in enumerate(coordinates)
    ]


def _outer_ring(polygon: object, path: str) -> str:
    """CAP "lat,lon lat,lon ..." from GeoJSON [lon, lat] positions, closed if it was not."""
    if not isinstance(polygon, list) or not polygon or not isinstance(polygon[0], list):
        raise _rejected(path, "a polygon must be an array of linear rings")
    pairs = []
    for i, position in enumerate(polygon[0]):
        at = f"{path}[0][{i}]"
        if not isinstance(position, list) or len(position) < 2:
            raise _rejected(at, "a position must be an array [lon, lat, ...]")
        pairs.append(f"{_coordinate(position[1], 90, at)},{_coordinate(position[0], 180, at)}")
    if pairs and pairs[0] != pairs[-1]:
        pairs.append(pairs[0])
    return " ".join(pairs)


def _coordinate(value: object, limit: int, path: str) -> str:
    """A latitude or longitude in plain decimal notation (repr's 1e-05 is not CAP)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _rejected(path, f"a coordinate must be a number, got {type(value).__name__}")
    if not -limit <= value <= limit:  # also refuses NaN and infinities
        raise _rejected(path, f"coordinate {value!r} is outside -{limit}..{limit}")
    return format(Decimal(repr(value)), "f")
