"""Strict JSON parsing for untrusted input: every way a body can be malformed has a named reason.

Python's `json` accepts duplicate keys (last wins), NaN/Infinity and lone surrogates, and it
crashes with RecursionError on deep nesting. None of that is acceptable for an alert whose
meaning must be unambiguous.
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import RejectedInput

DEFAULT_MAX_DEPTH = 32


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RejectedInput("duplicate_key", f"key {key!r} appears more than once in an object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise RejectedInput("non_finite_number", f"{name} is not a JSON number")


def _check_tree(document: Any, max_depth: int) -> None:
    """Iteratively check nesting depth and that every string is valid Unicode text."""
    stack: list[tuple[Any, int, str]] = [(document, 1, "$")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            if depth > max_depth:
                raise RejectedInput(
                    "nesting_too_deep", f"nesting deeper than {max_depth} at {path}"
                )
            for key, item in value.items():
                _check_text(key, path)
                stack.append((item, depth + 1, f"{path}.{key}"))
        elif isinstance(value, list):
            if depth > max_depth:
                raise RejectedInput(
                    "nesting_too_deep", f"nesting deeper than {max_depth} at {path}"
                )
            stack.extend((item, depth + 1, f"{path}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, path)


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RejectedInput(
            "invalid_unicode", f"lone surrogate escape in a string at {path}"
        ) from None


def loads_strict(body: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse `body` as UTF-8 JSON, raising RejectedInput with a named reason on any defect."""
    if len(body) > max_bytes:
        raise RejectedInput("body_too_large", f"{len(body)} bytes exceeds the {max_bytes} limit")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedInput("invalid_utf8", f"not UTF-8 at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        document = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except RecursionError:
        raise RejectedInput("nesting_too_deep", f"nesting deeper than {max_depth}") from None
    except json.JSONDecodeError as exc:
        raise RejectedInput(
            "invalid_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    _check_tree(document, max_depth)
    return document
