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
    """`node` with `additionalProperties: false` on every subschema that declares properties,
    but the root (whose `allOf` branches, closed themselves, declare the rest) and those
    applied in place. `alert.details` declares none, so it stays open."""
    if isinstance(node, dict):
        closed = {key: _closed(value, key in _IN_PLACE) for key, value in node.items()}
        if "properties" in node and not in_place and "$schema" not in node:
            closed["additionalProperties"] = False
        return closed
    if isinstance(node, list):
        return [_closed(item, in_place) for item in node]
    return node


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
    validator = strict_validator()  # the published schema's constraints and more
    if validator.is_valid(document):
        return []
    return [
        f"{json_path(problem)}: {problem.message}" for problem in validator.iter_errors(document)
    ]


def assert_contract(body: bytes | dict[str, Any]) -> dict[str, Any]:
    """The parsed body, after asserting that it keeps the contract."""
    problems = contract_violations(body)
    assert not problems, "webhook body breaks webhook-v1:\n" + "\n".join(problems)
    parsed: dict[str, Any] = json.loads(body) if isinstance(body, bytes) else body
    return parsed


def _shape(body: bytes) -> bytes:
    """`body` with its delivery id spelled "-": the bodies of one fan-out differ only there,
    so each shape is validated once (a 5,000-row fan-out would otherwise spend a minute
    here). A body whose delivery id is not a non-empty string is its own shape."""
    try:
        delivery_id = json.loads(body).get("deliveryId")
    except (ValueError, AttributeError):
        return body
    if not isinstance(delivery_id, str) or not delivery_id:
        return body
    spelled = b'"deliveryId":' + json.dumps(delivery_id).encode()
    return body.replace(spelled, b'"deliveryId":"-"', 1)


@dataclass
class WebhookContract:
    """What a loopback receiver found wrong with the bodies it was sent."""

    checked: int = 0
    violations: list[str] = field(default_factory=list)
    valid_shapes: set[bytes] = field(default_factory=set)

    def check(self, body: bytes) -> None:
        self.checked += 1
        shape = _shape(body)
        if shape in self.valid_shapes:
            return
        problems = contract_violations(body)
        if problems:
            self.violations.extend(problems)
        else:
            self.valid_shapes.add(shape)

    def assert_kept(self) -> None:
        assert not self.violations, (
            f"{len(self.violations)} problems in {self.checked} webhook bodies:\n"
            + "\n".join(self.violations[:20])
        )
