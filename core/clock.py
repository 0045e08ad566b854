"""The clock every component reads the time from: injectable, so tests and benchmarks can
run on a fake one; and the reading of the date-times that inputs carry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_moment(text: str) -> datetime | None:
    """An ISO 8601 / RFC 3339 date-time with an offset, as written (its own offset kept), or
    None when it is not one or has no UTC equivalent between years 1 and 9999 (which every
    comparison and the store need). RFC 3339's lower-case `t` and `z` are read too."""
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return None
    return moment
