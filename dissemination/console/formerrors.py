"""An API refusal as a form shows it: each problem against the field it concerns (the error
summary links to it, the field is marked invalid), worded for the person filling the form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dissemination.api.errors import ApiError


@dataclass
class FormErrors:
    """Problems by form field id, in the order found; "" is the form as a whole."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, field_id: str, message: str) -> None:
        self.items.append((field_id, message))

    def of(self, field_id: str) -> str | None:
        """The first problem with this field, if any."""
        return next((message for found, message in self.items if found == field_id), None)

    def __bool__(self) -> bool:
        return bool(self.items)


def from_refusal(error: ApiError, fields: Mapping[str, str], *, whole: str = "") -> FormErrors:
    """The refusal's details against form fields: `fields` maps the first name of a detail's
    JSON path (`$.clearance.maxTlp` → "clearance") to a field id; a path it does not name is
    put against `whole` (a field id, or "" for the form)."""
    found = FormErrors()
    for detail in error.details:
        top = detail.path.removeprefix("$").lstrip(".").split(".", 1)[0].split("[", 1)[0]
        target = fields.get(top, whole)
        where = detail.path.removeprefix("$").lstrip(".")
        found.add(target, f"{where}: {detail.message}" if where else detail.message)
    if not found:
        found.add(whole, error.message)
    return found
