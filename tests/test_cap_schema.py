"""The CAP-JSON schema (schemas/cap.json): each CAP 1.2 rule it encodes, one table at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from core.validation import schema_errors, validator_for

DATE_TIME_FIELDS = ("effective", "onset", "expires")


def alert(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "identifier": "KSTO1055887203",
        "sender": "KSTO@NWS.NOAA.GOV",
        "sent": "2003-06-17T14:57:00-07:00",
        "status": "Actual",
        "msgType": "Alert",
        "scope": "Public",
    }
    document.update(changes)
    return document


def info(**changes: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "category": ["Met"],
        "event": "SEVERE THUNDERSTORM",
        "urgency": "Immediate",
        "severity": "Severe",
        "certainty": "Observed",
    }
    block.update(changes)
    return block


def area(**changes: Any) -> dict[str, Any]:
    return {"areaDesc": "SOUTHWESTERN ALPINE COUNTY", **changes}


def with_area(**changes: Any) -> dict[str, Any]:
    return alert(info=[info(area=[area(**changes)])])


def error_paths(document: dict[str, Any]) -> list[str]:
    return [e.path for e in schema_errors("cap", document)]


def without(document: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def cap_schema() -> dict[str, Any]:
    text = resources.files("schemas").joinpath("cap.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def object_schemas(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield node
        for value in node.values():
            yield from object_schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from object_schemas(value)


# --- the schema itself ---


def test_schema_is_draft_2020_12_with_its_id() -> None:
    schema = cap_schema()
    assert validator_for("cap").schema == schema  # validator_for checks it against the metaschema
    assert schema["$id"] == "urn:fusion-dissemination:cap"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_object_level_forbids_unknown_properties() -> None:
    objects = list(object_schemas(cap_schema()))
    assert len(objects) == 5  # alert, valuePair, info, resource, area
    assert all(o.get("additionalProperties") is False for o in objects)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(alert(extra=1), id="alert"),
        pytest.param(alert(info=[info(extra=1)]), id="info"),
        pytest.param(with_area(extra=1), id="area"),
        pytest.param(with_area(geocode=[{"valueName": "UGC", "value": "X", "x": 1}]), id="pair"),
        pytest.param(
            alert(info=[info(resource=[{"resourceDesc": "m", "mimeType": "a/b", "x": 1}])]),
            id="resource",
        ),
    ],
)
def test_unknown_property_is_rejected_at_every_level(document: dict[str, Any]) -> None:
    assert len(error_paths(document)) == 1


# --- the alert header ---


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(alert(), id="header-only"),
        pytest.param(alert(info=[]), id="empty-info"),
        pytest.param(alert(capVersion="1.1"), id="cap-1.1"),
        pytest.param(alert(capVersion="1.2", code=["IPAWSv1.0"], note="n"), id="code-note"),
        pytest.param(alert(handling={"tlp": "AMBER", "caveats": ["LES"]}), id="handling"),
    ],
)
def test_valid_alerts(document: dict[str, Any]) -> None:
    assert error_paths(document) == []


@pytest.mark.parametrize("name", ["identifier", "sender", "sent", "status", "msgType", "scope"])
def test_header_element_is_required(name: str) -> None:
    [error] = schema_errors("cap", without(alert(), name))
    assert (error.path, error.message) == ("$", f"'{name}' is a required property")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("status", "Real"),
        ("msgType", "Notice"),
        ("scope", "public"),
        ("capVersion", "1.0"),
        ("code", []),
        ("code", [""]),
        ("handling", {"tlp": "PURPLE"}),
    ],
)
def test_header_values_outside_the_spec_are_rejected(name: str, value: object) -> None:
    assert error_paths(alert(**{name: value}))[0].startswith(f"$.{name}")


@pytest.mark.parametrize("msg_type", ["Update", "Cancel", "Ack", "Error"])
def test_message_about_other_messages_needs_references(msg_type: str) -> None:
    reference = "KSTO@NWS.NOAA.GOV,KSTO1055887202,2003-06-17T14:00:00-07:00"
    assert error_paths(alert(msgType=msg_type)) == ["$"]
    assert error_paths(alert(msgType=msg_type, references=reference)) == []


@pytest.mark.parametrize(
    "references",
    [
        "a@b,ID-1,2003-06-17T14:57:00-07:00",
        "a@b,ID-1,2003-06-17T14:57:00-07:00 a@b,ID-2,2003-06-17T15:57:00+00:00",
        "a@b,ID-1,2003-06-17T14:57:00-07:00\n    a@b,ID-2,2003-06-17T15:57:00-00:00",
    ],
)
def test_references_of_sender_identifier_sent_triples(references: str) -> None:
    assert error_paths(alert(msgType="Update", references=references)) == []


@pytest.mark.parametrize(
    "references",
    [
        "",
        "ID-1",
        "a@b,ID-1",
        "a@b ID-1 2003-06-17T14:57:00-07:00",
        "a@b,ID-1,2003-06-17",
        "a@b,ID 1,2003-06-17T14:57:00-07:00",
        "a@b,ID-1,2003-06-17T14:57:00-07:00,",
        " a@b,ID-1,2003-06-17T14:57:00-07:00",
        "a@b,ID-1,2003-06-17T14:57:00-07:00\n",
    ],
)
def test_malformed_references_are_rejected(references: str) -> None:
    assert error_paths(alert(msgType="Update", references=references)) == ["$.references"]


@pytest.mark.parametrize("name", ["identifier", "sender"])
@pytest.mark.parametrize("bad", ["", "has space", "has,comma", "a<b", "a&b", "tab\tin", "end\n"])
def test_identifier_and_sender_exclude_spaces_commas_and_restricted(name: str, bad: str) -> None:
    assert error_paths(alert(**{name: bad})) == [f"$.{name}"]


@pytest.mark.parametrize(
    "sent",
    [
        "2003-06-17T14:57:00-07:00",
        "2003-06-17T14:57:00+00:00",
        "2012-05-02T23:21:04-00:00",  # Environment Canada, Met Eireann, NOAA tsunami samples
        "2024-02-29T23:59:59+05:30",
    ],
)
def test_cap_date_times_are_accepted(sent: str) -> None:
    assert error_paths(alert(sent=sent)) == []


@pytest.mark.parametrize(
    "sent",
    [
        "2003-06-17T14:57:00Z",  # valid RFC 3339, but no sample uses it and CAP 1.2 forbids it
        "2003-06-17T14:57:00.5-07:00",
        "2003-06-17T14:57:00",
        "2003-06-17 14:57:00-07:00",
        "2003-06-17",
        "2003-02-30T14:57:00-07:00",
        "2003-06-17T25:57:00-07:00",
        "2003-06-17T14:57:00-07:00\n",
        "",
    ],
)
def test_other_date_times_are_rejected(sent: str) -> None:
    assert set(error_paths(alert(sent=sent))) == {"$.sent"}


@pytest.mark.parametrize(
    ("scope", "needs"), [("Restricted", "restriction"), ("Private", "addresses")]
)
def test_restricted_and_private_scopes_name_their_audience(scope: str, needs: str) -> None:
    assert error_paths(alert(scope=scope)) == ["$"]
    assert error_paths(alert(scope=scope, **{needs: "LE partners"})) == []
    assert error_paths(alert(scope=scope, **{needs: ""})) == [f"$.{needs}"]


# --- info ---


def test_full_info_block_is_valid() -> None:
    block = info(
        language="es-US",
        category=["Geo", "CBRNE"],
        responseType=["Shelter", "AllClear"],
        audience="residents",
        eventCode=[{"valueName": "SAME", "value": "SVR"}],
        effective="2003-06-17T14:57:00-07:00",
        onset="2003-06-17T14:57:00-07:00",
        expires="2003-06-17T16:00:00-07:00",
        senderName="NWS",
        headline="h",
        description="d",
        instruction="i",
        web="https://example.gov/alert",
        contact="c",
        parameter=[{"valueName": "TLP", "value": "AMBER"}],
        resource=[{"resourceDesc": "map", "mimeType": "image/png", "size": 5, "uri": "map.png"}],
        area=[area(polygon=["38.47,-120.14 38.34,-119.95 38.52,-119.74 38.47,-120.14"])],
    )
    assert error_paths(alert(info=[block, info()])) == []


@pytest.mark.parametrize("name", ["category", "event", "urgency", "severity", "certainty"])
def test_info_element_is_required(name: str) -> None:
    assert error_paths(alert(info=[without(info(), name)])) == ["$.info[0]"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("category", []),
        ("category", ["Weather"]),
        ("category", "Met"),
        ("event", ""),
        ("responseType", ["Run"]),
        ("responseType", []),
        ("urgency", ""),
        ("urgency", "Soon"),
        ("severity", "Bad"),
        ("certainty", "Very Likely"),
        ("language", "en_US"),
        ("language", "verylongtag-US"),
        ("language", ""),
        ("web", "not a uri"),
        ("eventCode", [{"valueName": "SAME"}]),
        ("parameter", [{"valueName": "", "value": "x"}]),
        ("parameter", [{"valueName": "n", "value": 5}]),
        ("parameter", []),
    ]
    + [(name, "2003-06-17T14:57:00Z") for name in DATE_TIME_FIELDS],
)
def test_info_values_outside_the_spec_are_rejected(name: str, value: object) -> None:
    paths = error_paths(alert(info=[info(**{name: value})]))
    assert paths
    assert all(p.startswith(f"$.info[0].{name}") for p in paths)


def test_pair_value_may_be_empty() -> None:
    # Real NWS, CAP-AU and CAP-CP feeds send <value/>, and the XSD's xs:string allows it.
    document = alert(info=[info(parameter=[{"valueName": "WMOHEADER", "value": ""}])])
    assert error_paths(document) == []


@pytest.mark.parametrize(
    "resource",
    [
        {"mimeType": "image/png"},
        {"resourceDesc": "", "mimeType": "image/png"},
        {"resourceDesc": "map", "mimeType": "image/png", "size": "5"},
        {"resourceDesc": "map", "mimeType": "image/png", "size": -1},
        {"resourceDesc": "map", "mimeType": "image/png", "uri": "http://a b"},
    ],
)
def test_malformed_resources_are_rejected(resource: dict[str, Any]) -> None:
    assert error_paths(alert(info=[info(resource=[resource])]))[0].startswith("$.info[0].resource")


@pytest.mark.parametrize(("version", "valid"), [(None, False), ("1.2", False), ("1.1", True)])
def test_resource_mime_type_is_required_except_in_cap_11(version: str | None, valid: bool) -> None:
    document = alert(info=[info(resource=[{"resourceDesc": "Image file (GIF)"}])])
    if version is not None:
        document["capVersion"] = version
    assert error_paths(document) == ([] if valid else ["$.info[0].resource[0]"])


# --- area ---


@pytest.mark.parametrize(
    "polygon",
    [
        "38.47,-120.14 38.34,-119.95 38.52,-119.74 38.47,-120.14",
        "38.47,-120.14 38.34,-119.95\n 38.52,-119.74  38.62,-119.89 38.47,-120.14",
        "-90,-180 -89.5,179.9 0,0 90.0,180.0 -90,-180",
        "+41.12,-117.61 +41.06,-117.47 +41.04,-117.47 +41.12,-117.61",
    ],
)
def test_closed_polygons_of_four_or_more_points_are_valid(polygon: str) -> None:
    assert error_paths(with_area(polygon=[polygon])) == []


@pytest.mark.parametrize(
    "polygon",
    [
        pytest.param("", id="empty"),
        pytest.param("38.47,-120.14 38.34,-119.95 38.47,-120.14", id="three-points"),
        pytest.param("38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89", id="open"),
        pytest.param("38.47,-120.14 38.34,-119.95 38.52,-119.74 38.470,-120.140", id="text-closed"),
        pytest.param("91,0 1,1 2,2 91,0", id="latitude-91"),
        pytest.param("0,181 1,1 2,2 0,181", id="longitude-181"),
        pytest.param("1,1 2,2, 3,3 1,1", id="stray-comma"),
        pytest.param("1;1 2;2 3;3 1;1", id="semicolons"),
        pytest.param("-120.14,38.47 -119.95,38.34 -119.74,38.52 -120.14,38.47", id="lon-lat"),
        pytest.param("1,1 2,2 3,3 1,1\n", id="trailing-newline"),
    ],
)
def test_other_polygons_are_rejected(polygon: str) -> None:
    assert error_paths(with_area(polygon=[polygon])) == ["$.info[0].area[0].polygon[0]"]


@pytest.mark.parametrize("circle", ["32.9525,-115.5527 0", "-35.3888,147.0598 25.0"])
def test_circles_are_centre_and_radius(circle: str) -> None:
    assert error_paths(with_area(circle=[circle])) == []


@pytest.mark.parametrize(
    "circle", ["32.9525,-115.5527", "32.9525,-115.5527 -1", "32.9525 -115.5527 10", "95,0 1"]
)
def test_other_circles_are_rejected(circle: str) -> None:
    assert error_paths(with_area(circle=[circle])) == ["$.info[0].area[0].circle[0]"]


def test_geocodes_and_altitudes() -> None:
    codes = [{"valueName": n, "value": v} for n, v in [("FIPS6", "006109"), ("UGC", "CAZ072")]]
    assert error_paths(with_area(geocode=codes, altitude=0, ceiling=9842.5197)) == []
    assert error_paths(with_area(ceiling=100)) == ["$.info[0].area[0]"]
    assert error_paths(with_area(altitude="high")) == ["$.info[0].area[0].altitude"]
    assert error_paths(alert(info=[info(area=[{"polygon": []}])])) == [
        "$.info[0].area[0]",
        "$.info[0].area[0].polygon",
    ]
