"""The base of the error tree, shared by every package (the service's own errors extend it
in `dissemination.errors`, the channels' in `channels.errors`).

    DisseminationError
     ├── ConfigError           a setting is missing or has a bad value (names key and value,
     │                         any URL's password masked)
     ├── RejectedInput         an alert can never be processed as sent: dead-lettered
     │    (reason: a stable code such as "invalid_json" or "schema_violation";
     │     errors: each problem with the JSON path where it was found)
     └── StoreUnavailable      our own database failed: retry later, never reject the input

An input error is the publisher's to fix; a store error is ours. Intake treats the two
oppositely (reject without requeue vs. nack with requeue), so they never share a branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.masking import mask_text, mask_value

# An error names a problem; it need not repeat the input. jsonschema quotes the offending
# value whole, and a dead letter's headers must fit in one AMQP frame.
MAX_DETAIL_CHARS = 500
MAX_DETAILS = 20


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One problem found in an input, at a JSON-path-like location ("$" is the whole)."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}

    def bounded(self) -> ErrorDetail:
        """This detail with its path and message cut to MAX_DETAIL_CHARS each."""
        if len(self.path) <= MAX_DETAIL_CHARS and len(self.message) <= MAX_DETAIL_CHARS:
            return self
        return ErrorDetail(_cut(self.path), _cut(self.message))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


class DisseminationError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(DisseminationError):
    """A setting is missing or invalid; raised at start-up, naming the key and the value,
    with the password of any URL in either masked (the message is printed and logged)."""

    def __init__(self, key: str, value: object, problem: str) -> None:
        value = mask_value(value)
        problem = mask_text(problem)
        super().__init__(f"setting {key}={value!r}: {problem}")
        self.key = key
        self.value = value
        self.problem = problem


class RejectedInput(DisseminationError):
    """An input that can never be processed as sent; `reason` is a stable machine code."""

    def __init__(self, reason: str, errors: Sequence[ErrorDetail] | str) -> None:
        if isinstance(errors, str):
            errors = (ErrorDetail("$", errors),)
        self.reason = reason
        self.errors: tuple[ErrorDetail, ...] = _bounded(errors)
        first = self.errors[0].message if self.errors else ""
        super().__init__(f"{reason}: {first}" if first else reason)

    def errors_as_dicts(self) -> list[dict[str, str]]:
        return [e.as_dict() for e in self.errors]


def _bounded(errors: Sequence[ErrorDetail]) -> tuple[ErrorDetail, ...]:
    """At most MAX_DETAILS details, each bounded; the last says how many were left out."""
    if len(errors) <= MAX_DETAILS:
        return tuple(e.bounded() for e in errors)
    left_out = len(errors) - MAX_DETAILS + 1
    kept = [e.bounded() for e in errors[: MAX_DETAILS - 1]]
    return (*kept, ErrorDetail("$", f"and {left_out} more problems"))


class StoreUnavailable(DisseminationError):
    """Our database could not be reached or failed mid-transaction; the work must be retried."""
