"""JSON Schema validation of alert documents, with validators compiled once and reused.

Documents are validated against each schema with its plain `$ref`s inlined (`schemainline`:
the same constraints, about half the work); `validator_for` is the schema as written.
Every schema in the `schemas` package is registered by its `$id`
(`urn:fusion-dissemination:<name>`), so schemas may `$ref` each other. Validators check
`format` (date-time, email, uri, ...) because an unchecked format is no check at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from core.errors import ErrorDetail, RejectedInput
from core.schemainline import inlined

SCHEMA_ID_PREFIX = "urn:fusion-dissemination:"
MAX_REPORTED_ERRORS = 20


@cache
def schema_documents() -> dict[str, dict[str, Any]]:
    """Every schema of the schemas package by $id, loaded once per process."""
    documents: dict[str, dict[str, Any]] = {}
    for entry in resources.files("schemas").iterdir():
        if entry.name.endswith(".json"):
            document = json.loads(entry.read_text(encoding="utf-8"))
            if isinstance(document, dict) and "$id" in document:
                documents[document["$id"]] = document
    return documents


@cache
def _registry() -> tuple[Registry[Any], dict[str, dict[str, Any]]]:
    documents = schema_documents()
    registry: Registry[Any] = Registry().with_resources(
        (schema_id, Resource.from_contents(doc, default_specification=DRAFT202012))
        for schema_id, doc in documents.items()
    )
    return registry, documents


@cache
def validator_for(name: str) -> Draft202012Validator:
    """The compiled validator for schema `name` (e.g. "cap", "sar"); built once per process."""
    registry, documents = _registry()
    schema_id = SCHEMA_ID_PREFIX + name
    try:
        schema = documents[schema_id]
    except KeyError:
        raise LookupError(f"no schema with $id {schema_id!r} in the schemas package") from None
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(
        schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


@cache
def inlined_validator_for(name: str) -> Draft202012Validator:
    """The validator documents are checked with: schema `name` with its plain `$ref`s
    inlined, built once per process (it accepts and refuses what `validator_for` does)."""
    validator_for(name)  # checked against the metaschema
    registry, documents = _registry()
    schema = documents[SCHEMA_ID_PREFIX + name]
    return Draft202012Validator(
        inlined(schema, registry),
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def prepare_validators() -> None:
    """Build every schema's validator now (about 130 ms in all; CAP's alone about 25 ms), at
    start-up, rather than on the first document of each kind, which would wait for it."""
    for schema_id in schema_documents():
        inlined_validator_for(schema_id.removeprefix(SCHEMA_ID_PREFIX))


def json_path(error: ValidationError) -> str:
    """The JSON path of the instance location an error refers to, e.g. `$.info[0].urgency`."""
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _details(errors: Iterable[ValidationError]) -> list[ErrorDetail]:
    ordered = sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [ErrorDetail(json_path(e), e.message) for e in ordered[:MAX_REPORTED_ERRORS]]


def schema_errors(name: str, document: Mapping[str, Any]) -> list[ErrorDetail]:
    """Every problem schema `name` finds in `document` (at most MAX_REPORTED_ERRORS)."""
    return _details(inlined_validator_for(name).iter_errors(document))


def validate(name: str, document: Mapping[str, Any]) -> None:
    """Raise RejectedInput("schema_violation") if `document` does not satisfy schema `name`."""
    validator = inlined_validator_for(name)
    if validator.is_valid(document):
        return
    raise RejectedInput("schema_violation", _details(validator.iter_errors(document)))
