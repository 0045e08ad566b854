"""Strict JSON parsing for untrusted input: every way a body can be malformed has a named reason.

Python's `json` accepts duplicate keys (last wins), NaN/Infinity, numbers that overflow to
infinity and lone surrogates; it raises a bare ValueError on an integer longer than `int()`
converts, and RecursionError on deep nesting. None of that is acceptable for an alert whose
meaning must be unambiguous. NUL is refused too: PostgreSQL text cannot hold it, so a string
with NUL could be accepted here and then never be stored.
"""

from __future__ import annotations

import json
import math
from typing import Any

from core.errors import ErrorDetail, RejectedInput

DEFAULT_MAX_DEPTH = 32
# Far beyond any number an alert carries, far below Python's limit on int() (4300 digits).
MAX_INTEGER_DIGITS = 100


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RejectedInput("duplicate_key", f"key {key!r} appears more than once in an object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise RejectedInput("non_finite_number", f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise RejectedInput(
            "number_out_of_range",
            f"an integer of {digits} digits is longer than the {MAX_INTEGER_DIGITS} accepted",
        )
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise RejectedInput("number_out_of_range", f"{shown} is too large for a number")
    return value


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
    if "\x00" in text:
        raise RejectedInput(
            "nul_character",
            [ErrorDetail(path, "NUL (\\u0000) in a string, which cannot be stored")],
        )


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
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise RejectedInput("nesting_too_deep", f"nesting deeper than {max_depth}") from None
    except json.JSONDecodeError as exc:
        raise RejectedInput(
            "invalid_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    _check_tree(document, max_depth)
    return document
