"""The webhook contract as loopback receivers check it: every body they are sent must satisfy
`schemas/webhook-v1.json`, and more strictly than the published schema asks (which lets
receivers ignore fields added later within version 1): no property the schema does not
declare, anywhere outside `alert.details`. Receivers record what they find
(`WebhookContract.check`) and their fixture fails the test at teardown
(`WebhookContract.assert_kept`), because an exception in a request handler would only
become an HTTP 500, which the service retries."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from core.validation import json_path, schema_documents

SCHEMA_ID = "urn:fusion-dissemination:webhook-v1"


_IN_PLACE = frozenset({"if", "then", "else", "not", "allOf", "anyOf", "oneOf"})
"""Keywords whose subschemas apply to the same object as their parent: closing them would
refuse the properties their parent declares."""


def _closed(node: Any, in_place: bool = False) -> Any:
    """`node` with `unevaluatedProperties: false` on every subschema that declares
    properties (`alert.details` declares none, so it stays open)."""
    if isinstance(node, dict):
        closed = {key: _closed(value, key in _IN_PLACE) for key, value in node.items()}
        if "properties" in node and not in_place:
            closed["unevaluatedProperties"] = False
        return closed
    if isinstance(node, list):
        return [_closed(item, in_place) for item in node]
    return node


@functools.cache
def published_validator() -> Draft202012Validator:
    """The schema as published."""
    schema = schema_documents()[SCHEMA_ID]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@functools.cache
def strict_validator() -> Draft202012Validator:
    """The schema closed: undeclared properties are errors (see the module docstring)."""
    schema = _closed(copy.deepcopy(schema_documents()[SCHEMA_ID]))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def contract_violations(body: bytes | dict[str, Any]) -> list[str]:
    """What is wrong with a webhook body (bytes as sent, or parsed); [] when it is valid."""
    try:
        document = json.loads(body) if isinstance(body, bytes) else body
    except ValueError as error:
        return [f"not JSON: {error}"]
    return [
        f"{json_path(problem)}: {problem.message}"
        for validator in (published_validator(), strict_validator())
        for problem in validator.iter_errors(document)
    ]


def assert_contract(body: bytes | dict[str, Any]) -> dict[str, Any]:
    """The parsed body, after asserting that it keeps the contract."""
    problems = contract_violations(body)
    assert not problems, "webhook body breaks webhook-v1:\n" + "\n".join(problems)
    parsed: dict[str, Any] = json.loads(body) if isinstance(body, bytes) else body
    return parsed


@dataclass
class WebhookContract:
    """What a loopback receiver found wrong with the bodies it was sent."""

    checked: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, body: bytes) -> None:
        self.checked += 1
        self.violations.extend(contract_violations(body))

    def assert_kept(self) -> None:
        assert not self.violations, (
            f"{len(self.violations)} problems in {self.checked} webhook bodies:\n"
            + "\n".join(self.violations[:20])
        )
