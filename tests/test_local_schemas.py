"""The JSON Schemas of the local alert kinds (sar, bolo, situational_awareness, advisory).

Our fixtures are valid; each small mutation of a valid document is rejected with an error
that names the JSON path of the problem; the x-pii annotations that redaction relies on
are where they must be.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from core.validation import SCHEMA_ID_PREFIX, schema_errors, validator_for
from dissemination.controls.redaction import dotted, pii_paths
from tests.samples import FIXTURES_DIR

Doc = dict[str, Any]
Key = str | int
Mutation = Callable[[Doc], None]

ALERTS_DIR = FIXTURES_DIR / "alerts"
KINDS = ("sar", "bolo", "situational_awareness", "advisory")
COMMON = SCHEMA_ID_PREFIX + "common"
ISE_SAR_CATEGORIES = {
    "breach_attempted_intrusion",
    "misrepresentation",
    "theft_loss_diversion",
    "sabotage_tampering_vandalism",
    "cyberattack",
    "expressed_or_implied_threat",
    "aviation_activity",
    "eliciting_information",
    "testing_or_probing_of_security",
    "recruiting_financing",
    "photography",
    "observation_surveillance",
    "materials_acquisition_storage",
    "acquisition_of_expertise",
    "weapons_collection_discovery",
    "sector_specific_incident",
}
PERSON_PII = {"name", "aliases", "dateOfBirth", "identificationNumbers", "address", "phone"}
VEHICLE_PII = {"plate", "vin"}


def load_fixture(name: str) -> Doc:
    document: Doc = json.loads((ALERTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return document


def load_schema(name: str) -> Doc:
    text = resources.files("schemas").joinpath(f"{name}.json").read_text(encoding="utf-8")
    document: Doc = json.loads(text)
    return document


def fixture_paths() -> list[Path]:
    return sorted(ALERTS_DIR.glob("*.json"))


# --- every fixture is valid -------------------------------------------------------------


def test_fixture_set_is_complete() -> None:
    names = {p.stem for p in fixture_paths()}
    expected = {f"{kind}_{variant}" for kind in KINDS for variant in ("full", "minimal")}
    assert expected | {"sar_update", "advisory_cancel"} <= names


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_fixture_is_valid(path: Path) -> None:
    document = load_fixture(path.stem)
    assert path.stem.startswith(document["kind"])
    assert schema_errors(document["kind"], document) == []


@pytest.mark.parametrize("kind", KINDS)
def test_full_fixture_uses_every_top_level_field(kind: str) -> None:
    envelope = load_schema("common")["$defs"]["envelope"]["properties"]
    declared = set(envelope) | set(load_schema(kind)["properties"])
    assert declared - set(load_fixture(f"{kind}_full")) == set()


@pytest.mark.parametrize("kind", ["sar", "bolo"])
def test_full_fixture_uses_every_person_and_vehicle_field(kind: str) -> None:
    defs = load_schema("common")["$defs"]
    document = load_fixture(f"{kind}_full")
    used_person = {key for subject in document["subjects"] for key in subject}
    used_vehicle = {key for vehicle in document["vehicles"] for key in vehicle}
    assert set(defs["person"]["properties"]) == used_person
    assert set(defs["vehicle"]["properties"]) == used_vehicle


# --- the shape every kind schema shares -------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_kind_schema_is_closed_and_shares_the_envelope(kind: str) -> None:
    schema = load_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID_PREFIX + kind
    assert schema["$ref"] == COMMON + "#/$defs/envelope"
    assert schema["unevaluatedProperties"] is False
    assert schema["properties"]["kind"] == {"const": kind}
    assert "kind" in schema["required"]
    assert "headline" not in schema["required"]


@pytest.mark.parametrize("name", [*KINDS, "common"])
def test_schema_is_valid_draft_2020_12_despite_x_pii(name: str) -> None:
    # validator_for runs Draft202012Validator.check_schema: the metaschema allows unknown
    # keywords, so the x-pii annotation needs no vocabulary of its own.
    schema = validator_for(name).schema
    assert isinstance(schema, Mapping)
    assert schema["$id"] == SCHEMA_ID_PREFIX + name


def test_sar_behavior_categories_are_the_sixteen_ise_sar_categories() -> None:
    enum = load_schema("sar")["properties"]["behaviorCategory"]["enum"]
    assert len(enum) == 16
    assert set(enum) == ISE_SAR_CATEGORIES


# --- bad input: each case is one small mutation of a valid document ---------------------


def put(*path: Key, value: object) -> Mutation:
    """Set the value at `path` (creating nothing but the last key)."""

    def mutate(document: Doc) -> None:
        parent: Any = document
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = copy.deepcopy(value)

    return mutate


def drop(*path: Key) -> Mutation:
    """Delete the key or list item at `path`."""

    def mutate(document: Doc) -> None:
        parent: Any = document
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(document: Doc) -> None:
        for mutation in mutations:
            mutation(document)

    return mutate


RING = ("area", "polygons", 0)
BAD_INPUT = [
    # SAR: the predicate, handling marks, no mass assignment, PII records
    (
        "missing-behavior-category",
        "sar_minimal",
        drop("behaviorCategory"),
        "$",
        "'behaviorCategory' is a required property",
    ),
    (
        "unknown-17th-category",
        "sar_full",
        put("behaviorCategory", value="loitering"),
        "$.behaviorCategory",
        "not one of",
    ),
    (
        "category-not-snake-case",
        "sar_full",
        put("behaviorCategory", value="Photography"),
        "$.behaviorCategory",
        "not one",
    ),
    (
        "tlp-unknown",
        "sar_full",
        put("handling", "tlp", value="PURPLE"),
        "$.handling.tlp",
        "is not one of",
    ),
    (
        "tlp-lowercase",
        "sar_full",
        put("handling", "tlp", value="amber"),
        "$.handling.tlp",
        "is not one of",
    ),
    (
        "caveat-lowercase",
        "sar_full",
        put("handling", "caveats", value=["les"]),
        "$.handling.caveats[0]",
        "match",
    ),
    (
        "caveat-repeated",
        "sar_full",
        put("handling", "caveats", value=["LES", "LES"]),
        "$.handling.caveats",
        "uniq",
    ),
    (
        "handling-unknown-field",
        "sar_full",
        put("handling", "releasable", value=True),
        "$.handling",
        "Additional prop",
    ),
    (
        "top-level-unknown-field",
        "sar_full",
        put("isApproved", value=True),
        "$",
        "Unevaluated properties are not allowed",
    ),
    (
        "handling-not-object",
        "sar_minimal",
        put("handling", value="AMBER"),
        "$.handling",
        "is not of type 'object'",
    ),
    (
        "subject-unknown-field",
        "sar_full",
        put("subjects", 0, "ssn", value="000-00-0000"),
        "$.subjects[0]",
        "Additional",
    ),
    (
        "vehicle-unknown-field",
        "sar_full",
        put("vehicles", 0, "owner", value="x"),
        "$.vehicles[0]",
        "Additional prop",
    ),
    (
        "dob-impossible-date",
        "sar_full",
        put("subjects", 0, "dateOfBirth", value="1988-02-30"),
        "$.subjects[0].dateOfBirth",
        "is not a 'date'",
    ),
    (
        "dob-not-iso-date",
        "sar_full",
        put("subjects", 0, "dateOfBirth", value="21/03/1988"),
        "$.subjects[0].dateOfBirth",
        "does not match",
    ),
    (
        "id-number-missing",
        "sar_full",
        drop("subjects", 0, "identificationNumbers", 0, "number"),
        "$.subjects[0].identificationNumbers[0]",
        "'number' is a required",
    ),
    (
        "subject-empty",
        "sar_full",
        put("subjects", 1, value={}),
        "$.subjects[1]",
        "should be non-empty",
    ),
    (
        "vin-with-letter-o",
        "sar_full",
        put("vehicles", 0, "vin", value="2T1BURHE0OC000417"),
        "$.vehicles[0].vin",
        "does not match",
    ),
    (
        "vehicle-year-string",
        "sar_full",
        put("vehicles", 0, "year", value="2018"),
        "$.vehicles[0].year",
        "not of type 'integer'",
    ),
    (
        "phone-free-text",
        "sar_full",
        put("subjects", 0, "phone", value="call me"),
        "$.subjects[0].phone",
        "does not match",
    ),
    (
        "sanitized-not-boolean",
        "sar_full",
        put("sanitized", value="no"),
        "$.sanitized",
        "is not of type 'boolean'",
    ),
    (
        "sanitized-with-subject-name",
        "sar_update",
        put("subjects", 0, "name", value="Johnathan M. Doe"),
        "$.subjects[0]",
        "'name' should not be valid under",
    ),
    (
        "sanitized-with-plate",
        "sar_update",
        put("vehicles", 0, "plate", value="XKR 4417"),
        "$.vehicles[0]",
        "'plate' should not be valid under",
    ),
    (
        "sanitized-with-location-address",
        "sar_update",
        put("location", "address", value="4100 River Road"),
        "$.location",
        "'address' should not be valid under",
    ),
    (
        "agency-missing-name",
        "sar_full",
        drop("reportingAgency", "name"),
        "$.reportingAgency",
        "'name' is a required property",
    ),
    (
        "ori-too-short",
        "sar_full",
        put("reportingAgency", "ori", value="VA029"),
        "$.reportingAgency.ori",
        "does not match",
    ),
    (
        "location-missing-description",
        "sar_full",
        drop("location", "description"),
        "$.location",
        "'description' is a required",
    ),
    (
        "location-latitude-91",
        "sar_full",
        put("location", "latitude", value=91),
        "$.location.latitude",
        "maximum of 90",
    ),
    (
        "latitude-without-longitude",
        "sar_full",
        drop("location", "longitude"),
        "$.location",
        "'longitude' is a dependency of 'latitude'",
    ),
    (
        "narrative-empty",
        "sar_full",
        put("narrative", value=""),
        "$.narrative",
        "should be non-empty",
    ),
    (
        "narrative-too-long",
        "sar_full",
        put("narrative", value="x" * 20001),
        "$.narrative",
        "is too long",
    ),
    (
        "observed-at-date-only",
        "sar_full",
        put("observedAt", value="2024-05-13"),
        "$.observedAt",
        "does not match",
    ),
    ("kind-wrong-const", "sar_full", put("kind", value="bolo"), "$.kind", "'sar' was expected"),
    ("kind-missing", "sar_minimal", drop("kind"), "$", "'kind' is a required property"),
    # The envelope, shared by every kind
    (
        "sent-not-a-date-time",
        "sar_full",
        put("sent", value="2024-13-45T99:00:00Z"),
        "$.sent",
        "is not a 'date-time'",
    ),
    (
        "sent-without-offset",
        "bolo_full",
        put("sent", value="2024-05-14T09:42:00"),
        "$.sent",
        "does not match",
    ),
    (
        "expires-free-text",
        "advisory_full",
        put("expires", value="next Tuesday"),
        "$.expires",
        "does not match",
    ),
    ("sender-missing", "sar_minimal", drop("sender"), "$", "'sender' is a required property"),
    (
        "identifier-with-spaces",
        "sar_full",
        put("identifier", value="FC SAR 417"),
        "$.identifier",
        "does not match",
    ),
    (
        "identifier-with-comma",
        "bolo_full",
        put("identifier", value="FC-BOLO,93"),
        "$.identifier",
        "does not match",
    ),
    (
        "sender-with-ampersand",
        "advisory_full",
        put("sender", value="a&b@fusion.example.gov"),
        "$.sender",
        "does not match",
    ),
    ("status-unknown", "sar_full", put("status", value="Live"), "$.status", "is not one of"),
    ("msg-type-lowercase", "sar_full", put("msgType", value="alert"), "$.msgType", "is not one of"),
    ("scope-unknown", "sar_full", put("scope", value="Internal"), "$.scope", "is not one of"),
    ("urgency-unknown", "bolo_full", put("urgency", value="Now"), "$.urgency", "is not one of"),
    ("severity-unknown", "bolo_full", put("severity", value="High"), "$.severity", "is not one of"),
    (
        "certainty-unknown",
        "bolo_full",
        put("certainty", value="Very Likely"),
        "$.certainty",
        "is not one of",
    ),
    (
        "headline-too-long",
        "advisory_full",
        put("headline", value="H" * 161),
        "$.headline",
        "is too long",
    ),
    (
        "language-not-a-tag",
        "advisory_full",
        put("language", value="English (US)"),
        "$.language",
        "does not match",
    ),
    (
        "update-without-references",
        "sar_update",
        drop("references"),
        "$",
        "'references' is a required property",
    ),
    (
        "cancel-without-references",
        "advisory_cancel",
        drop("references"),
        "$",
        "'references' is a required property",
    ),
    (
        "references-empty",
        "sar_update",
        put("references", value=[]),
        "$.references",
        "should be non-empty",
    ),
    (
        "reference-missing-sent",
        "sar_update",
        drop("references", 0, "sent"),
        "$.references[0]",
        "'sent' is a required",
    ),
    (
        "reference-sent-impossible",
        "sar_update",
        put("references", 0, "sent", value="2024-02-30T00:00:00Z"),
        "$.references[0].sent",
        "is not a 'date-time'",
    ),
    # Areas
    (
        "area-missing-description",
        "sar_full",
        drop("area", "description"),
        "$.area",
        "'description' is a required property",
    ),
    (
        "ring-not-closed",
        "sar_full",
        drop(*RING, -1),
        "$.area.polygons[0]",
        "should not be valid under",
    ),
    (
        "ring-three-points",
        "sar_full",
        put(*RING, value=[[38.8, -77.3], [38.9, -77.3], [38.8, -77.3]]),
        "$.area.polygons[0]",
        "is too short",
    ),
    (
        "ring-latitude-91",
        "sar_full",
        put(*RING, 1, 0, value=91),
        "$.area.polygons[0][1][0]",
        "maximum of 90",
    ),
    (
        "ring-longitude-181",
        "sar_full",
        put(*RING, 1, 1, value=-181),
        "$.area.polygons[0][1][1]",
        "minimum of -180",
    ),
    (
        "point-three-numbers",
        "sar_full",
        put(*RING, 1, value=[38.852, -77.298, 0]),
        "$.area.polygons[0][1]",
        "Expected at most 2 items",
    ),
    (
        "circle-radius-zero",
        "bolo_full",
        put("area", "circles", 0, "radiusKm", value=0),
        "$.area.circles[0].radiusKm",
        "less than or equal to the minimum",
    ),
    (
        "circle-longitude-200",
        "bolo_full",
        put("area", "circles", 0, "longitude", value=-200),
        "$.area.circles[0].longitude",
        "minimum of -180",
    ),
    (
        "geocode-unknown-field",
        "bolo_full",
        put("area", "geocodes", 0, "county", value="Example"),
        "$.area.geocodes[0]",
        "Additional prop",
    ),
    # BOLO
    (
        "bolo-missing-agency",
        "bolo_minimal",
        drop("issuingAgency"),
        "$",
        "'issuingAgency' is a required property",
    ),
    (
        "bolo-subject-type-unknown",
        "bolo_full",
        put("subjectType", value="animal"),
        "$.subjectType",
        "is not one of",
    ),
    (
        "bolo-reason-unknown",
        "bolo_full",
        put("reason", value="curious"),
        "$.reason",
        "is not one of",
    ),
    (
        "bolo-armed-not-boolean",
        "bolo_full",
        put("armedAndDangerous", value="yes"),
        "$.armedAndDangerous",
        "is not of type 'boolean'",
    ),
    (
        "bolo-last-seen-at-text",
        "bolo_full",
        put("lastSeen", "at", value="last night"),
        "$.lastSeen.at",
        "does not match",
    ),
    (
        "bolo-property-unknown-field",
        "bolo_full",
        put("property", 0, "owner", value="x"),
        "$.property[0]",
        "Additional properties",
    ),
    (
        "bolo-vehicle-type-without-vehicles",
        "bolo_minimal",
        drop("vehicles"),
        "$",
        "'vehicles' is a required property",
    ),
    (
        "bolo-person-type-without-subjects",
        "bolo_full",
        drop("subjects"),
        "$",
        "'subjects' is a required property",
    ),
    (
        "bolo-subject-unknown-field",
        "bolo_full",
        put("subjects", 0, "alias", value="Rick"),
        "$.subjects[0]",
        "Additional prop",
    ),
    # Situational awareness
    (
        "sa-missing-event",
        "situational_awareness_minimal",
        drop("event"),
        "$",
        "'event' is a required property",
    ),
    (
        "sa-category-unknown",
        "situational_awareness_full",
        put("category", value="Weather"),
        "$.category",
        "is not one of",
    ),
    (
        "sa-onset-no-t-no-seconds",
        "situational_awareness_full",
        put("onset", value="2024-07-08 04:50"),
        "$.onset",
        "does not match",
    ),
    (
        "sa-impacts-not-array",
        "situational_awareness_full",
        put("impacts", value="road closed"),
        "$.impacts",
        "is not of type 'array'",
    ),
    (
        "sa-unknown-field",
        "situational_awareness_full",
        put("priority", value=1),
        "$",
        "Unevaluated properties",
    ),
    # Advisory
    (
        "advisory-missing-summary",
        "advisory_minimal",
        drop("summary"),
        "$",
        "'summary' is a required property",
    ),
    (
        "advisory-sector-unknown",
        "advisory_full",
        put("sectors", 0, value="military"),
        "$.sectors[0]",
        "is not one of",
    ),
    (
        "advisory-sector-repeated",
        "advisory_full",
        put("sectors", value=["government", "government"]),
        "$.sectors",
        "non-unique",
    ),
    (
        "advisory-source-uri-not-uri",
        "advisory_full",
        put("sources", 0, "uri", value="portal products 112"),
        "$.sources[0].uri",
        "is not a 'uri'",
    ),
    (
        "advisory-source-missing-title",
        "advisory_full",
        drop("sources", 1, "title"),
        "$.sources[1]",
        "'title' is a required property",
    ),
    (
        "advisory-wrong-kind",
        "advisory_cancel",
        put("kind", value="situational_awareness"),
        "$.kind",
        "'advisory' was expected",
    ),
    (
        "advisory-update-without-references",
        "advisory_full",
        both(put("msgType", value="Update"), drop("references")),
        "$",
        "'references' is a required",
    ),
]


@pytest.mark.parametrize(
    ("fixture", "mutation", "path", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_is_rejected_at_its_path(
    fixture: str, mutation: Mutation, path: str, fragment: str
) -> None:
    original = load_fixture(fixture)
    document = copy.deepcopy(original)
    mutation(document)
    assert document != original
    errors = schema_errors(original["kind"], document)
    assert errors, "the mutated document was accepted"
    # Only the mutated place is reported: no echo such as "Unevaluated properties" at $.
    assert {e.path for e in errors} == {path}, errors
    assert any(fragment in e.message for e in errors), errors


def test_bad_input_table_is_large_and_distinct() -> None:
    ids = [case[0] for case in BAD_INPUT]
    assert len(ids) >= 30
    assert len(ids) == len(set(ids))


# --- good input: variations that must stay valid ----------------------------------------

GOOD_INPUT = [
    ("tlp-legacy-white", "sar_full", put("handling", "tlp", value="WHITE")),
    ("tlp-absent-default-applies", "sar_full", drop("handling", "tlp")),
    ("handling-empty", "sar_full", put("handling", value={})),
    (
        "caveats-other-codes",
        "sar_full",
        put("handling", "caveats", value=["CUI", "FOUO", "PCII", "LAW_ENF-1"]),
    ),
    ("cancel-with-references", "sar_full", put("msgType", value="Cancel")),
    ("sent-fractional-seconds-utc", "sar_full", put("sent", value="2024-05-14T13:42:00.250Z")),
    ("sanitized-without-pii", "sar_minimal", put("sanitized", value=True)),
    ("subjects-empty", "sar_full", put("subjects", value=[])),
    (
        "location-without-coordinates",
        "sar_full",
        both(drop("location", "latitude"), drop("location", "longitude")),
    ),
    ("alert-with-references", "sar_update", put("msgType", value="Alert")),
    ("bolo-vehicle-type-with-vehicles", "bolo_full", put("subjectType", value="vehicle")),
    (
        "geocode-other-code-system",
        "bolo_full",
        put("area", "geocodes", 0, value={"valueName": "ZIP", "value": "22000"}),
    ),
    ("vin-pre-1981", "bolo_full", put("vehicles", 0, "vin", value="F10GCR12345")),
    ("language-two-letters", "advisory_minimal", put("language", value="es")),
    ("status-exercise", "situational_awareness_minimal", put("status", value="Exercise")),
]


@pytest.mark.parametrize(
    ("fixture", "mutation"), [pytest.param(*case[1:], id=case[0]) for case in GOOD_INPUT]
)
def test_valid_variation_is_accepted(fixture: str, mutation: Mutation) -> None:
    document = load_fixture(fixture)
    mutation(document)
    assert schema_errors(document["kind"], document) == []


# --- x-pii: the annotation redaction walks ----------------------------------------------


def pii_fields(kind: str) -> set[str]:
    return {dotted(path) for path in pii_paths(kind)}


def x_pii_values(node: object) -> Iterator[object]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "x-pii":
                yield value
            else:
                yield from x_pii_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from x_pii_values(item)


def test_person_and_vehicle_defs_are_marked_pii() -> None:
    defs = load_schema("common")["$defs"]
    assert defs["person"]["x-pii"] is True
    assert defs["vehicle"]["x-pii"] is True
    assert {name for name, sub in defs["person"]["properties"].items() if "x-pii" in sub} == (
        PERSON_PII
    )
    assert {name for name, sub in defs["vehicle"]["properties"].items() if "x-pii" in sub} == (
        VEHICLE_PII
    )


@pytest.mark.parametrize("name", [*KINDS, "common"])
def test_x_pii_is_always_the_literal_true(name: str) -> None:
    assert all(value is True for value in x_pii_values(load_schema(name)))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "sar",
            {f"subjects[].{p}" for p in PERSON_PII}
            | {f"vehicles[].{p}" for p in VEHICLE_PII}
            | {"location.address"},
        ),
        (
            "bolo",
            {f"subjects[].{p}" for p in PERSON_PII}
            | {f"vehicles[].{p}" for p in VEHICLE_PII}
            | {"property[].serialNumber"},
        ),
        ("situational_awareness", set()),
        ("advisory", set()),
    ],
)
def test_kind_schema_pii_paths(kind: str, expected: set[str]) -> None:
    assert pii_fields(kind) == expected


def test_sanitized_sar_forbids_exactly_the_pii_properties() -> None:
    sar = load_schema("sar")
    forbidden = set()
    for field, guard in sar["then"]["properties"].items():
        prefix = f"{field}[]" if "items" in guard else field
        names = guard.get("items", guard)["propertyNames"]["not"]["enum"]
        forbidden |= {f"{prefix}.{name}" for name in names}
    assert forbidden == pii_fields("sar")


def test_sanitized_sar_error_names_the_field_without_echoing_its_value() -> None:
    document = load_fixture("sar_update")
    document["subjects"][0]["dateOfBirth"] = "1988-03-21"
    errors = schema_errors("sar", document)
    assert [e.path for e in errors] == ["$.subjects[0]"]
    assert "'dateOfBirth'" in errors[0].message
    assert "1988-03-21" not in errors[0].message
