"""Schemas with their `$ref`s inlined (core.schemainline) accept and refuse exactly what the
schemas as written do, with the same errors: checked over valid documents of every alert
kind and a few thousand one-change mutations of them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from core.schemainline import inlined
from core.validation import (
    SCHEMA_ID_PREFIX,
    _details,
    inlined_validator_for,
    prepare_validators,
    schema_documents,
    schema_errors,
    validator_for,
)
from dissemination.intake.capxml import cap_document_from_xml
from tests.alerts import fixture_document
from tests.samples import sample_files

KINDS = ("sar", "bolo", "situational_awareness", "advisory")
BAD_VALUES: tuple[object, ...] = (None, 7, -1.5, "", "x" * 300, "not a date", [], {}, [{}], True)
MAX_MUTATIONS = 120  # per document, spread evenly over all of its mutations


def cap_documents() -> list[dict[str, Any]]:
    """A small CAP-JSON alert with a full info block, and the two smallest public samples
    when they are present."""
    small: dict[str, Any] = {
        "identifier": "KSTO1055887203",
        "sender": "KSTO@NWS.NOAA.GOV",
        "sent": "2003-06-17T14:57:00-07:00",
        "status": "Actual",
        "msgType": "Alert",
        "scope": "Public",
        "info": [
            {
                "category": ["Met"],
                "event": "SEVERE THUNDERSTORM",
                "urgency": "Immediate",
                "severity": "Severe",
                "certainty": "Observed",
                "expires": "2003-06-17T16:00:00-07:00",
                "parameter": [{"valueName": "a", "value": "b"}],
                "resource": [{"resourceDesc": "map", "mimeType": "image/png", "size": 10}],
                "area": [
                    {
                        "areaDesc": "Somewhere",
                        "polygon": ["38.47,-120.14 38.34,-119.95 38.52,-119.74 38.47,-120.14"],
                        "circle": ["32.9525,-115.5527 0"],
                        "geocode": [{"valueName": "SAME", "value": "006109"}],
                    }
                ],
            }
        ],
    }
    documents = [small]
    samples = sorted(sample_files("valid-1.2"), key=lambda path: path.stat().st_size)
    documents.extend(cap_document_from_xml(path.read_bytes()) for path in samples[:2])
    return documents


def mutations(document: Any) -> Iterator[Any]:
    """`document` with one thing changed: each value replaced by each bad value, each key of
    an object dropped, each list emptied."""
    if isinstance(document, dict):
        for key, value in document.items():
            dropped = {k: v for k, v in document.items() if k != key}
            yield dropped
            for bad in BAD_VALUES:
                yield {**document, key: bad}
            for changed in mutations(value):
                yield {**document, key: changed}
    elif isinstance(document, list):
        yield []
        for index, value in enumerate(document):
            for changed in mutations(value):
                yield [*document[:index], changed, *document[index + 1 :]]


def cases() -> Iterator[Any]:
    for document in cap_documents():
        yield pytest.param("cap", document, id=f"cap-{document['identifier'][:20]}")
    for kind in KINDS:
        for variant in ("minimal", "full"):
            yield pytest.param(
                kind, fixture_document(f"{kind}_{variant}.json"), id=f"{kind}-{variant}"
            )


@pytest.mark.parametrize(("name", "document"), list(cases()))
def test_inlined_schema_finds_what_the_written_schema_finds(name: str, document: Any) -> None:
    written = validator_for(name)
    assert schema_errors(name, document) == []
    every = list(mutations(copy.deepcopy(document)))
    assert len(every) > 50  # the mutations reached into the document
    for changed in every[:: max(1, len(every) // MAX_MUTATIONS)]:
        assert schema_errors(name, changed) == _details(written.iter_errors(changed)), changed


def test_every_schema_inlines() -> None:
    for schema_id in schema_documents():
        assert inlined_validator_for(schema_id.removeprefix(SCHEMA_ID_PREFIX)).schema


def test_cap_validation_follows_no_reference_outside_definitions() -> None:
    schema = inlined_validator_for("cap").schema
    assert isinstance(schema, dict)
    outside = {k: v for k, v in schema.items() if k != "$defs"}
    assert "$ref" not in json.dumps(outside)


def registry_of(*schemas: dict[str, Any]) -> Registry[Any]:
    return Registry().with_resources(
        (s["$id"], Resource.from_contents(s, default_specification=DRAFT202012)) for s in schemas
    )


def test_a_reference_beside_other_keywords_is_kept_absolute() -> None:
    schema = {
        "$id": "urn:t:a",
        "properties": {"x": {"$ref": "#/$defs/s", "maxLength": 3}, "y": {"$ref": "#/$defs/s"}},
        "$defs": {"s": {"type": "string", "description": "d"}},
    }
    result = inlined(schema, registry_of(schema))
    assert result["properties"]["x"] == {"$ref": "urn:t:a#/$defs/s", "maxLength": 3}
    assert result["properties"]["y"] == {"type": "string", "description": "d"}


def test_references_into_another_schema_resolve_against_it() -> None:
    common = {"$id": "urn:t:common", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"const": 1}}}
    schema = {"$id": "urn:t:top", "properties": {"v": {"$ref": "urn:t:common#/$defs/a"}}}
    result = inlined(schema, registry_of(schema, common))
    assert result["properties"]["v"] == {"const": 1}


def test_a_whole_schema_inlined_loses_its_id() -> None:
    rule = {"$id": "urn:t:rule", "$schema": "x", "type": "object", "$defs": {"d": {"const": 2}}}
    rule["properties"] = {"d": {"$ref": "#/$defs/d"}}
    schema = {"$id": "urn:t:sub", "properties": {"rule": {"$ref": "urn:t:rule"}}}
    inlined_rule = inlined(schema, registry_of(schema, rule))["properties"]["rule"]
    assert "$id" not in inlined_rule
    assert "$schema" not in inlined_rule
    assert inlined_rule["properties"] == {"d": {"const": 2}}


def test_a_recursive_reference_stays_a_reference() -> None:
    schema = {
        "$id": "urn:t:tree",
        "$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}},
        "properties": {"root": {"$ref": "#/$defs/node"}},
    }
    root = inlined(schema, registry_of(schema))["properties"]["root"]
    assert root["properties"]["child"] == {"$ref": "urn:t:tree#/$defs/node"}


def test_a_nested_id_is_refused() -> None:
    schema = {"$id": "urn:t:n", "properties": {"v": {"$id": "urn:t:inner", "type": "string"}}}
    with pytest.raises(ValueError, match="nested \\$id"):
        inlined(schema, registry_of(schema))


def test_every_validator_is_built_before_the_first_document() -> None:
    """The service builds them all at start-up (`prepare_validators`); afterwards every
    schema's validator comes from the cache, none is built for a document."""
    prepare_validators()
    built = inlined_validator_for.cache_info()
    for schema_id in schema_documents():
        inlined_validator_for(schema_id.removeprefix(SCHEMA_ID_PREFIX))
    after = inlined_validator_for.cache_info()
    assert after.misses == built.misses
    assert after.currsize == len(schema_documents())
