"""Request helpers every API shares: strict JSON bodies, forms, query parameters, CSV cells."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from core.errors import RejectedInput
from core.strictjson import loads_strict
from core.validation import validate
from dissemination.api.app import RUNTIME
from dissemination.api.errors import ApiError

MAX_PAGE = 500
MAX_PARAM_DIGITS = 20  # more than any count or id a parameter takes
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


async def json_body(request: web.Request) -> Any:
    """The body parsed as strictly as alert intake parses it (no duplicate keys, NaN, numbers
    out of range, lone surrogates, NUL or runaway nesting): 400 invalid_json otherwise."""
    limits = request.app[RUNTIME].processor.limits
    try:
        return loads_strict(
            await request.read(), max_bytes=limits.max_bytes, max_depth=limits.max_depth
        )
    except RejectedInput as rejected:
        if rejected.reason == "body_too_large":
            raise ApiError(413, "body_too_large", str(rejected)) from None
        raise ApiError(400, "invalid_json", str(rejected), rejected.errors) from None


# What aiohttp raises on a form it cannot parse: ValueError (no or a bad boundary, a field
# without a name, text not in its charset), LookupError (an unknown charset), RuntimeError
# (an unknown Content-Transfer-Encoding), HttpProcessingError (a bad part header) and
# RequestPayloadError (a body that does not decompress as its Content-Encoding says).
FORM_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    LookupError,
    RuntimeError,
    HttpProcessingError,
    RequestPayloadError,
)


async def form_fields(request: web.Request) -> dict[str, str]:
    """A urlencoded or multipart form's text fields (the last of a repeated name), or
    ApiError 400 invalid_form: the form cannot be parsed, holds a file, NUL or text that is
    not Unicode."""
    try:
        form = await request.post()
    except FORM_ERRORS as error:
        raise ApiError(
            400, "invalid_form", f"the form cannot be read ({type(error).__name__})"
        ) from None
    fields: dict[str, str] = {}
    for name, value in form.items():
        if not isinstance(value, str):
            raise ApiError(400, "invalid_form", f"field {name!r} is a file, not text")
        if not storable(name) or not storable(value):
            raise ApiError(400, "invalid_form", "a form field holds NUL or is not valid text")
        fields[name] = value
    return fields


def storable(text: str) -> bool:
    """A form field's text may be stored: no NUL, and no lone surrogate (aiohttp decodes part
    headers with surrogateescape)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def ascii_digits(raw: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts e.g. "²", which int() refuses."""
    return raw.isascii() and raw.isdigit()


def bounded_int(raw: str, low: int, high: int) -> int | None:
    """`raw` as an integer from `low` to `high` (ASCII digits only), else None. The digits
    are counted before converting: int() raises on more than 4300, leading zeros included."""
    if not ascii_digits(raw) or len(raw) > MAX_PARAM_DIGITS:
        return None
    value = int(raw)
    return value if low <= value <= high else None


def text_param(name: str, value: str) -> str:
    if "\x00" in value:
        raise ApiError(400, "invalid_parameter", f"{name} must not contain NUL")
    return value


def bool_param(name: str, value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false")


def limit_param(request: web.Request) -> int:
    limit = bounded_int(request.query.get("limit", "100"), 1, MAX_PAGE)
    if limit is None:
        raise ApiError(400, "invalid_parameter", f"limit must be an integer from 1 to {MAX_PAGE}")
    return limit


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


def validated(schema: str, document: Any) -> dict[str, Any]:
    """`document` if it is an object that satisfies schema `schema`; ApiError 422 otherwise."""
    if not isinstance(document, dict):
        raise ApiError(422, "schema_violation", "the body must be a JSON object")
    try:
        validate(schema, document)
    except RejectedInput as rejected:
        raise ApiError.from_rejection(rejected) from None
    return document
