"""Log lines as the service writes them, captured for assertions: a handler on the root logger
formats every record (ours and every library's) with the service's JSON formatter, and each
line must parse as one JSON object."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dissemination.logs import configure_structlog, formatter

INSTANCE = "test-instance"
OURS = ("dissemination", "channels", "subscriptions")


class LogLines(logging.Handler):
    """Every record formatted as a JSON line, kept in order."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(formatter("json", INSTANCE))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every line, parsed: a line that is not one JSON object fails the test."""
        parsed = []
        for line in self.lines:
            assert "\n" not in line, line
            event = json.loads(line)
            assert isinstance(event, dict), line
            parsed.append(event)
        return parsed

    def named(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """The lines of this event whose fields have these values."""
        return [
            e
            for e in self.events
            if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
        ]


@contextmanager
def capturing(level: int = logging.INFO, ours: int = logging.DEBUG) -> Iterator[LogLines]:
    """Capture the lines logged at `level` and above (our own loggers' from `ours`)."""
    configure_structlog()
    handler = LogLines()
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in OURS)]
    levels = [logger.level for logger in loggers]
    root.addHandler(handler)
    root.setLevel(level)
    for name in OURS:
        logging.getLogger(name).setLevel(ours)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, old in zip(loggers, levels, strict=True):
            logger.setLevel(old)
