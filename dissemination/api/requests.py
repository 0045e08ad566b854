"""Request helpers every API shares: strict JSON bodies, query parameters, CSV cells."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from core.errors import RejectedInput
from core.strictjson import loads_strict
from dissemination.api.app import RUNTIME
from dissemination.api.errors import ApiError

MAX_PAGE = 500
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


async def json_body(request: web.Request) -> Any:
    """The body parsed as strictly as alert intake parses it (no duplicate keys, NaN, lone
    surrogates or runaway nesting), and without NUL, which PostgreSQL text cannot hold."""
    limits = request.app[RUNTIME].processor.limits
    try:
        document = loads_strict(
            await request.read(), max_bytes=limits.max_bytes, max_depth=limits.max_depth
        )
    except RejectedInput as rejected:
        if rejected.reason == "body_too_large":
            raise ApiError(413, "body_too_large", str(rejected)) from None
        raise ApiError(400, "invalid_json", str(rejected), rejected.errors) from None
    if _has_nul(document):
        raise ApiError(400, "invalid_json", "strings must not contain NUL (\\u0000)")
    return document


def _has_nul(document: Any) -> bool:
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def ascii_digits(raw: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts e.g. "²", which int() refuses."""
    return raw.isascii() and raw.isdigit()


def text_param(name: str, value: str) -> str:
    if "\x00" in value:
        raise ApiError(400, "invalid_parameter", f"{name} must not contain NUL")
    return value


def bool_param(name: str, value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false")


def limit_param(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not ascii_digits(raw) or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "invalid_parameter", f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


def csv_cell(value: Any) -> str:
    text = "true" if value is True else "false" if value is False else str(value)
    # Neutralize spreadsheet formulas: a cell must never execute when opened. An E.164
    # number ("+" and digits) is data, not a formula, and must round-trip unchanged.
    if text[:1] in FORMULA_STARTS and not E164.fullmatch(text):
        return "'" + text
    return text


def optional_text_param(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    return None if value is None else text_param(name, value)
