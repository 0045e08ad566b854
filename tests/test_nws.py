"""NWS api.weather.gov GeoJSON decoding: the public captures, our fixture, malformed input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import RejectedInput
from core.validation import schema_errors
from dissemination.intake.nws import cap_documents_from_nws
from tests.samples import FIXTURES_DIR, SAMPLES_DIR, sample_params

FIXTURE = FIXTURES_DIR / "nws" / "two_features.json"

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def fixture_feature() -> dict[str, Any]:
    feature: dict[str, Any] = load(FIXTURE)["features"][0]
    return feature


def decoded_valid(document: dict[str, Any]) -> list[dict[str, Any]]:
    alerts = cap_documents_from_nws(document)
    for alert in alerts:
        assert schema_errors("cap", alert) == []
    return alerts


def rejected_path(document: object) -> str:
    with pytest.raises(RejectedInput) as caught:
        cap_documents_from_nws(document)  # type: ignore[arg-type]
    assert caught.value.reason == "invalid_nws_geojson"
    [error] = caught.value.errors
    return error.path


def collection(*features: object) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


# --- the public captures ---


@pytest.mark.parametrize("path", sample_params("nws-json"))
def test_corpus_yields_one_valid_alert_per_feature(path: Path) -> None:
    document = load(path)
    alerts = decoded_valid(document)
    assert len(alerts) == len(document["features"]) > 0
    assert all(a["capVersion"] == "1.2" and a["scope"] == "Public" for a in alerts)


def test_corpus_old_style_identifier_and_references() -> None:
    path = SAMPLES_DIR / "nws-json" / "pynws__alerts_active_zone.json"
    if not path.is_file():
        pytest.skip("public NWS capture not found")
    [alert] = decoded_valid(load(path))
    assert alert["identifier"] == "NWS-IDP-PROD-3965873-3369046"
    assert (alert["msgType"], alert["sender"]) == ("Update", "w-nws.webmaster@noaa.gov")
    triples = alert["references"].split(" ")
    assert len(triples) == 4
    assert triples[0] == (
        "w-nws.webmaster@noaa.gov,NWS-IDP-PROD-3964821-3368352,2019-12-19T12:52:00-08:00"
    )
    info = alert["info"][0]
    assert (info["category"], info["responseType"]) == (["Met"], ["Prepare"])
    names = [g["valueName"] for g in info["area"][0]["geocode"]]
    assert (names.count("UGC"), names.count("SAME")) == (11, 16)
    assert "polygon" not in info["area"][0]
    assert {"valueName": "PIL", "value": "PQRFFAPQR"} in info["parameter"]
    assert "ends" not in info


def test_corpus_empty_references_are_left_out() -> None:
    path = SAMPLES_DIR / "nws-json" / "nws_alerts__api.json"
    if not path.is_file():
        pytest.skip("public NWS capture not found")
    update, alert = decoded_valid(load(path))
    assert update["identifier"].startswith("urn:oid:2.49.0.1.840.0.")
    assert "references" in update
    assert alert["msgType"] == "Alert"
    assert "references" not in alert


# --- our fixture ---


def test_fixture_polygon_is_lat_lon_and_null_geometry_has_none() -> None:
    with_polygon, without = decoded_valid(load(FIXTURE))
    area = with_polygon["info"][0]["area"][0]
    assert area["polygon"] == ["38.91,-77.05 38.93,-77.01 38.9,-76.98 38.88,-77.03 38.91,-77.05"]
    assert area["areaDesc"] == "District of Columbia; Prince Georges, MD"
    assert "polygon" not in without["info"][0]["area"][0]


def test_fixture_maps_event_codes_parameters_and_response() -> None:
    alert = decoded_valid(load(FIXTURE))[0]
    info = alert["info"][0]
    assert info["eventCode"] == [
        {"valueName": "SAME", "value": "SVR"},
        {"valueName": "NationalWeatherService", "value": "SVW"},
    ]
    assert info["parameter"][4:6] == [
        {"valueName": "BLOCKCHANNEL", "value": "EAS"},
        {"valueName": "BLOCKCHANNEL", "value": "NWEM"},
    ]
    assert info["responseType"] == ["Shelter"]
    assert alert["references"] == (
        "w-nws.webmaster@noaa.gov,"
        "urn:oid:2.49.0.1.840.0.aa11bb22cc33dd44ee55ff6600112233445566ff.001.1,"
        "2024-06-05T16:02:00-04:00"
    )


def test_fixture_null_values_are_left_out() -> None:
    info = decoded_valid(load(FIXTURE))[1]["info"][0]
    assert "onset" not in info
    assert "instruction" not in info
    assert info["expires"] == "2024-06-05T16:00:00-04:00"


def test_single_feature_yields_one_alert() -> None:
    [alert] = decoded_valid(fixture_feature())
    assert alert["info"][0]["event"] == "Severe Thunderstorm Warning"


def test_multipolygon_takes_each_outer_ring_and_closes_it() -> None:
    feature = fixture_feature()
    outer = [[-77.0, 38.0], [-76.0, 38.0], [-76.0, 39.0]]  # not closed
    hole = [[-76.5, 38.4], [-76.4, 38.4], [-76.4, 38.5], [-76.5, 38.4]]
    tiny = [[0.00001, 0], [1, 0], [1, 1], [0.00001, 0]]
    feature["geometry"] = {"type": "MultiPolygon", "coordinates": [[outer, hole], [tiny]]}
    [alert] = decoded_valid(feature)
    assert alert["info"][0]["area"][0]["polygon"] == [
        "38.0,-77.0 38.0,-76.0 39.0,-76.0 38.0,-77.0",
        "0,0.00001 0,1 1,1 0,0.00001",
    ]


def test_missing_required_property_is_left_for_the_schema() -> None:
    feature = fixture_feature()
    del feature["properties"]["event"]
    [alert] = cap_documents_from_nws(feature)
    assert [e.path for e in schema_errors("cap", alert)] == ["$.info[0]"]


# --- malformed input ---


def _feature_with(**properties: object) -> dict[str, Any]:
    feature = fixture_feature()
    feature["properties"].update(properties)
    return feature


def _feature_with_geometry(geometry: object) -> dict[str, Any]:
    feature = fixture_feature()
    feature["geometry"] = geometry
    return feature


@pytest.mark.parametrize(
    ("document", "path"),
    [
        pytest.param([], "$", id="not-an-object"),
        pytest.param({"type": "Topology"}, "$.type", id="unknown-type"),
        pytest.param(collection(), "$.features", id="no-features"),
        pytest.param({"type": "FeatureCollection"}, "$.features", id="features-missing"),
        pytest.param({"type": "FeatureCollection", "features": {}}, "$.features", id="not-list"),
        pytest.param(collection("x"), "$.features[0]", id="feature-not-object"),
        pytest.param(
            collection({"type": "Feature", "geometry": None}),
            "$.features[0].properties",
            id="no-properties",
        ),
        pytest.param({"type": "Feature", "properties": None}, "$.properties", id="null-properties"),
        pytest.param(_feature_with(headline=5), "$.properties.headline", id="number-headline"),
        pytest.param(_feature_with(category=["Met"]), "$.properties.category", id="list-category"),
        pytest.param(_feature_with(references="x"), "$.properties.references", id="refs-text"),
        pytest.param(
            _feature_with(references=[{"identifier": "a", "sent": "b"}]),
            "$.properties.references[0]",
            id="ref-without-sender",
        ),
        pytest.param(
            _feature_with(references=[{"identifier": "a", "sender": 1, "sent": "b"}]),
            "$.properties.references[0].sender",
            id="ref-number-sender",
        ),
        pytest.param(_feature_with(references=[7]), "$.properties.references[0]", id="ref-num"),
        pytest.param(_feature_with(parameters=[]), "$.properties.parameters", id="params-list"),
        pytest.param(
            _feature_with(parameters={"VTEC": "x"}), "$.properties.parameters.VTEC", id="param-str"
        ),
        pytest.param(_feature_with(geocode={"UGC": [1]}), "$.properties.geocode.UGC", id="geo-num"),
        pytest.param(_feature_with_geometry("x"), "$.geometry", id="geometry-text"),
        pytest.param(
            _feature_with_geometry({"type": "Point", "coordinates": [1, 2]}),
            "$.geometry.type",
            id="point",
        ),
        pytest.param(
            _feature_with_geometry({"type": "Polygon", "coordinates": []}),
            "$.geometry.coordinates",
            id="no-rings",
        ),
        pytest.param(
            _feature_with_geometry({"type": "MultiPolygon", "coordinates": None}),
            "$.geometry.coordinates",
            id="multi-null",
        ),
        pytest.param(
            _feature_with_geometry({"type": "Polygon", "coordinates": [[[1]]]}),
            "$.geometry.coordinates[0][0]",
            id="short-position",
        ),
        pytest.param(
            _feature_with_geometry({"type": "Polygon", "coordinates": [[[1, 2], ["a", 2]]]}),
            "$.geometry.coordinates[0][1]",
            id="text-coordinate",
        ),
        pytest.param(
            _feature_with_geometry({"type": "Polygon", "coordinates": [[[True, 2]]]}),
            "$.geometry.coordinates[0][0]",
            id="bool-coordinate",
        ),
        pytest.param(
            _feature_with_geometry({"type": "Polygon", "coordinates": [[[1, 91]]]}),
            "$.geometry.coordinates[0][0]",
            id="latitude-out-of-range",
        ),
        pytest.param(
            _feature_with_geometry({"type": "Polygon", "coordinates": [[[float("nan"), 1]]]}),
            "$.geometry.coordinates[0][0]",
            id="nan",
        ),
    ],
)
def test_malformed_input_is_rejected_with_its_path(document: object, path: str) -> None:
    assert rejected_path(document) == path


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    st.sampled_from(["id", "sent", "references", "parameters", "geocode", "event", "geometry"]),
    JSON_VALUES,
)
def test_any_json_in_any_field_decodes_or_is_rejected(key: str, value: object) -> None:
    feature = fixture_feature()
    target = feature if key == "geometry" else feature["properties"]
    target[key] = copy.deepcopy(value)
    reason = None
    try:
        alerts = cap_documents_from_nws(feature)
    except RejectedInput as rejected:
        reason = rejected.reason
    else:
        schema_errors("cap", alerts[0])  # must not raise, whatever the alert holds
    assert reason in {None, "invalid_nws_geojson"}


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(JSON_VALUES)
def test_any_json_document_decodes_or_is_rejected(document: object) -> None:
    reason = None
    try:
        cap_documents_from_nws(document)  # type: ignore[arg-type]
    except RejectedInput as rejected:
        reason = rejected.reason
    assert reason in {None, "invalid_nws_geojson"}
