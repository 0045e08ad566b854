"""The compose form of a local alert kind, generated from the kind's JSON Schema (the one
intake validates with): a field per value the schema describes, the document a submitted
form makes, and each schema error put back next to the field it is about.

The schema is walked to a bounded depth so a form stays a form: the scalars of the alert,
of its objects (issuing agency, last seen, area) and of the first item of its lists of
objects (subjects, vehicles, references); lists of text are one line per item; lists of
choices are checkboxes. What the form leaves out (a second subject, polygons) is sent
through the API. The envelope's identifier, sent time, kind and handling marks are not
fields of the kind: the service fills in the first two, the page asks for the marks apart."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from typing import Any, Literal

from core.errors import ErrorDetail
from core.validation import SCHEMA_ID_PREFIX, schema_documents

Widget = Literal["text", "textarea", "select", "checkbox", "number", "lines", "choices", "when"]
Path = tuple[str | int, ...]

KINDS: dict[str, str] = {
    "bolo": "Be on the lookout (BOLO)",
    "sar": "Suspicious activity report (SAR)",
    "situational_awareness": "Situational awareness report",
    "advisory": "Advisory",
}
LEFT_TO_THE_SERVICE = frozenset({"kind", "identifier", "sent", "sender", "handling"})
LONG_TEXT = 500  # strings that may be longer than this get a text area
MESSAGE_LIMIT = 200  # a schema message longer than this (it quotes the value) is cut
DATE_TIME_REF = "#/$defs/dateTime"
COMMON_ID = SCHEMA_ID_PREFIX + "common"
LOCAL_MINUTES = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


@dataclass(frozen=True, slots=True)
class FormField:
    """One value of the alert: `name` is the form field's name and id (its path, dotted)."""

    name: str
    path: Path
    label: str
    widget: Widget
    required: bool = False
    choices: tuple[str, ...] = ()
    hint: str | None = None
    group: str | None = None
    max_length: int | None = None


def _label(name: str) -> str:
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ")
    return words[:1].upper() + words[1:].lower()


def _resolve(schema: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """A subschema with its $ref followed (annotations beside the $ref kept), and whether it
    is the shared date-time."""
    reference = schema.get("$ref")
    if not isinstance(reference, str) or "#" not in reference:
        return dict(schema), False
    document_id, pointer = reference.split("#", 1)
    # The kinds refer into common by its full id; only common refers to itself ("#/...").
    target: Any = schema_documents()[document_id or COMMON_ID]
    for part in pointer.strip("/").split("/"):
        target = target[part]
    merged = dict(target) | {k: v for k, v in schema.items() if k != "$ref"}
    return merged, reference.endswith(DATE_TIME_REF)


def _scalar(
    name: str, path: Path, schema: Mapping[str, Any], required: bool, group: str | None
) -> FormField | None:
    """The field of a value that is not an object or a list of objects; None if there is
    nothing to ask (a constant, a list of lists)."""
    resolved, is_time = _resolve(schema)
    if "const" in resolved:
        return None
    dotted = ".".join(str(p) for p in path)
    hint = resolved.get("description")
    choices: tuple[str, ...] = ()
    longest = None
    kind = resolved.get("type")
    widget: Widget
    if is_time:
        widget, hint = "when", "Date and time in UTC, to the second."
    elif "enum" in resolved:
        widget, choices = "select", tuple(str(c) for c in resolved["enum"])
    elif kind == "boolean":
        widget = "checkbox"
    elif kind in ("integer", "number"):
        widget = "number"
    elif kind == "array":
        items, _ = _resolve(resolved.get("items", {}))
        if "enum" in items:
            widget, choices = "choices", tuple(str(c) for c in items["enum"])
        elif items.get("type") == "string":
            widget, hint = "lines", "One per line."
        else:
            return None
    elif kind == "string":
        longest = resolved.get("maxLength")
        widget = "textarea" if longest is not None and longest > LONG_TEXT else "text"
    else:
        return None
    return FormField(dotted, path, _label(name), widget, required, choices, hint, group, longest)


def _object_fields(
    properties: Mapping[str, Any],
    required: Sequence[str],
    path: Path,
    group: str | None,
    *,
    top: bool,
) -> list[FormField]:
    fields: list[FormField] = []
    for name, subschema in properties.items():
        if top and name in LEFT_TO_THE_SERVICE:
            continue
        resolved, _ = _resolve(subschema)
        here = (*path, name)
        if resolved.get("type") == "object" and top:
            inner_group = _label(name)
            fields += _object_fields(
                resolved.get("properties", {}), (), here, inner_group, top=False
            )
            continue
        items, _ = _resolve(resolved.get("items", {})) if "items" in resolved else ({}, False)
        if resolved.get("type") == "array" and items.get("type") == "object":
            if top:
                inner_group = f"{_label(name)} (the first)"
                fields += _object_fields(
                    items.get("properties", {}), (), (*here, 0), inner_group, top=False
                )
            continue
        made = _scalar(name, here, subschema, top and name in required, group)
        if made is not None:
            fields.append(made)
    return fields


@cache
def kind_fields(kind: str) -> tuple[FormField, ...]:
    """The form of `kind` (one of KINDS): the envelope's fields, then the kind's own."""
    schema = schema_documents()[SCHEMA_ID_PREFIX + kind]
    envelope, _ = _resolve({"$ref": schema["$ref"]})
    required = [*envelope.get("required", ()), *schema.get("required", ())]
    own = _object_fields(schema["properties"], required, (), None, top=True)
    shared = _object_fields(envelope["properties"], required, (), None, top=True)
    return tuple(own + shared)


def _converted(field: FormField, raw: str) -> Any:
    """The typed value of one filled-in field; text the type does not take is passed on as
    typed, so the schema names the problem at the field."""
    if field.widget == "number":
        for convert in (int, float):
            try:
                return convert(raw)
            except ValueError:
                continue
        return raw
    if field.widget == "when":
        return utc_text(raw)
    if field.widget == "lines":
        return [line.strip() for line in raw.splitlines() if line.strip()]
    return raw


def utc_text(raw: str) -> str:
    """A browser's date-time field (no zone, read as UTC) as RFC 3339; other text as is."""
    value = raw.strip()
    if LOCAL_MINUTES.match(value):
        return (value if value.count(":") == 2 else value + ":00") + "Z"
    return value


def _place(document: dict[str, Any], path: Path, value: Any) -> None:
    target: Any = document
    for part, following in pairwise(path):
        if isinstance(part, int):
            while len(target) <= part:
                target.append({})
            target = target[part]
            continue
        target = target.setdefault(part, [] if isinstance(following, int) else {})
    last = path[-1]
    if isinstance(last, int):
        target.append(value)
    else:
        target[last] = value


def document_of(
    kind: str, form: Mapping[str, str], chosen: Mapping[str, list[str]]
) -> dict[str, Any]:
    """The alert a submitted form describes: `form` the text fields, `chosen` the values of
    the checkbox groups by name. Empty fields are left out."""
    document: dict[str, Any] = {"kind": kind}
    for field in kind_fields(kind):
        if field.widget == "choices":
            values = chosen.get(field.name, [])
            if values:
                _place(document, field.path, values)
            continue
        if field.widget == "checkbox":
            if form.get(field.name):
                _place(document, field.path, True)
            continue
        raw = form.get(field.name, "")
        if raw.strip():
            _place(document, field.path, _converted(field, raw))
    return document


def _dotted(json_path: str) -> str:
    return re.sub(r"\[(\d+)\]", r".\1", json_path).lstrip("$").lstrip(".")


def _short(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def field_of(json_path: str, message: str, names: Sequence[str]) -> str | None:
    """The form field a schema error (by its path in the alert) is about, or None: a missing
    property is the field of that property; an error about an object goes to its first
    field, one about an item of a list to the list's field."""
    dotted = _dotted(json_path)
    missing = re.match(r"^'([^']+)' is a required property", message)
    if missing:
        dotted = f"{dotted}.{missing.group(1)}" if dotted else missing.group(1)
    while dotted:
        if dotted in names:
            return dotted
        inside = [n for n in names if n.startswith(dotted + ".")]
        if inside:
            return inside[0]
        dotted = dotted.rpartition(".")[0]
    return None


PLAIN_MESSAGES = (
    (re.compile(r"^'[^']+' is a required property$"), "Fill this in: it is required"),
    (re.compile(r"is too long$", re.DOTALL), "Too long: shorten it"),
    (re.compile(r"is too short$|should be non-empty$", re.DOTALL), "Fill this in"),
    (re.compile(r"is not a 'date-time'$|^'.*' does not match '\^\[0-9\]\{4\}", re.DOTALL),
     "Enter a date and time, e.g. 2026-12-06T14:30:00 (UTC)"),
    (re.compile(r"is not one of \[", re.DOTALL), "Choose one of the options"),
    (re.compile(r"is not of type '(number|integer)'$", re.DOTALL), "Enter a number"),
    (re.compile(r"does not match '", re.DOTALL), "Not in the expected form (see the hint)"),
)  # fmt: skip


def plain(message: str) -> str:
    """A schema message as staff read it: what to do, never the value echoed back."""
    for pattern, said in PLAIN_MESSAGES:
        if pattern.search(message):
            return said
    return _short(message)


def placed_errors(
    details: Sequence[ErrorDetail], names: Sequence[str], prefix: str = "$.alert"
) -> list[tuple[str | None, str]]:
    """Each error of a refused send as (field name or None, message), for the summary and
    the fields, once each; errors outside `prefix` keep their path's own dotted name."""
    placed: list[tuple[str | None, str]] = []
    for detail in details:
        if detail.path == prefix or detail.path.startswith((prefix + ".", prefix + "[")):
            inner = "$" + detail.path[len(prefix) :]
            where = field_of(inner, detail.message, names)
        else:
            where = _dotted(detail.path) or None
        said = plain(detail.message)
        if where is None:
            said = f"{_dotted(detail.path) or 'the alert'}: {said}"
        if (where, said) not in placed:
            placed.append((where, said))
    return placed
