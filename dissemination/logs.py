"""How the process logs: structlog for our own lines, and the standard library's records (aio-pika,
aiohttp, alembic, twilio) through the same processors, so that every line comes out in one
format: JSON objects one per line (`json`), or text for people (`console`). Every line carries
its timestamp, level, logger, event and this instance's name, and the ids bound with
`structlog.contextvars` (alert, delivery row, channel) while they apply."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

FORMATS = ("console", "json")
FIRST_KEYS = ("timestamp", "level", "instance", "logger", "event")
"""The keys every line starts with, in this order; the event's own fields follow."""


def instance_name(configured: str) -> str:
    """The name every line of this process carries: `configured`, or host name and pid."""
    return configured or f"{socket.gethostname()}:{os.getpid()}"


def _before_rendering(instance: str) -> Processor:
    def frame(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict["instance"] = instance
        framed = {key: event_dict.pop(key) for key in FIRST_KEYS if key in event_dict}
        framed.update(event_dict)
        return framed

    return frame


# Applied to our lines when they are made, and to a library's record when it is formatted.
_ANNOTATE: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_structlog() -> None:
    """Make structlog's loggers hand their lines to the standard library's logging (its levels
    and handlers), which `formatter` renders. Idempotent."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # a line below the level costs no more work
            *_ANNOTATE,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def formatter(log_format: str, instance: str, *, colors: bool = False) -> logging.Formatter:
    """A standard-library formatter that renders our lines and every library's alike."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    renderer: Processor
    last: list[Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        _before_rendering(instance),
    ]
    if log_format == "json":
        last.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: the fancy ones show local variables, which may hold secrets.
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, sort_keys=False, exception_formatter=structlog.dev.plain_traceback
        )
    return structlog.stdlib.ProcessorFormatter(
        processors=[*last, renderer], foreign_pre_chain=_ANNOTATE
    )


class ServiceLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler `configure` puts on the root logger (and replaces when called again).
    Without a stream of its own it writes to whatever standard error is when a line is
    written, so a process that swaps `sys.stderr` (as a test harness does) never writes to a
    closed one."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._follows_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follows_stderr:
            self.stream = sys.stderr
        super().emit(record)


def configure(
    level: str, log_format: str, instance: str, stream: TextIO | None = None
) -> logging.Handler:
    """Log at `level` and above to `stream` (standard error) in `log_format`, every line
    naming `instance`; returns the handler put on the root logger."""
    configure_structlog()
    handler = ServiceLogHandler(stream)
    handler.setFormatter(formatter(log_format, instance, colors=_is_terminal(handler.stream)))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, ServiceLogHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # Python's warnings too come out as lines of this format
    # The twilio SDK logs every request's URL and headers at INFO: noise, per message.
    logging.getLogger("twilio").setLevel(max(logging.WARNING, root.level))
    return handler


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
