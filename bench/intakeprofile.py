"""The profile mode of `bench.intake` (`--profile`): the serial cost of each intake stage per
message, and the tables printed from a pyinstrument profile of the service legs (self time by
frame and by library, inclusive time of the service's own functions)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import CAP_CONTENT_TYPE, RESULTS_DIR, BenchError, cap_alert_bodies
from dissemination.intake.pipeline import AlertPipeline
from dissemination.ledger.alerts import Ledger, PlannedAlert
from dissemination.settings import Settings
from dissemination.store.database import Database

if TYPE_CHECKING:
    from pyinstrument import Profiler
    from pyinstrument.frame import Frame

TOP_FRAMES = 15
LIBRARY_ROWS = 10
HTML_RESAMPLE_SECONDS = 0.01  # shrinks the HTML; the text and the tables use every sample


# --- stage costs (profile mode) ---------------------------------------------------------------


async def stage_costs(settings: Settings, sample: int) -> dict[str, Any]:
    """Per-message cost of each intake stage, measured serially in this process (no broker):
    decode, validation, normalization, serialization + hashing, then the store written one
    transaction per alert and in batches of `concurrency` messages per transaction (what the
    service's group commit does under load)."""
    from core.validation import schema_errors
    from dissemination.intake.decoding import decode_documents, intake_rules
    from dissemination.intake.normalize import alert_from_cap
    from dissemination.intake.pipeline import initial_state
    from dissemination.ledger.alerts import AlertMessage, Payload

    intake = settings.intake
    limits, defaults = intake_rules(intake)
    bodies = cap_alert_bodies(2 * sample, f"stage{uuid.uuid4().hex[:6]}")
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    documents = [decode_documents(body, CAP_CONTENT_TYPE, limits)[0] for body in bodies]
    seconds["xml_decode"] = time.perf_counter() - started
    started = time.perf_counter()
    for document in documents:
        if schema_errors(document.schema, document.body):
            raise BenchError("a generated alert failed schema validation")
    seconds["schema_validation"] = time.perf_counter() - started
    started = time.perf_counter()
    alerts = [alert_from_cap(d.body, d.source_format, defaults) for d in documents]
    seconds["normalize"] = time.perf_counter() - started
    started = time.perf_counter()
    for alert in alerts:
        alert.content_hash()  # Alert.to_json() plus canonical JSON and SHA-256
    seconds["to_json_and_content_hash"] = time.perf_counter() - started

    now = datetime.now(UTC)
    messages = [
        AlertMessage(
            Payload(body, CAP_CONTENT_TYPE), (PlannedAlert(alert, initial_state(alert, now)),), now
        )
        for alert, body in zip(alerts, bodies, strict=True)
    ]
    one_by_one, batched = messages[:sample], messages[sample:]
    batch = settings.broker.concurrency
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        pipeline = AlertPipeline(Ledger(database), intake)
        started = time.perf_counter()
        for message in one_by_one:
            await pipeline.record_messages([message])
        store_single = time.perf_counter() - started
        started = time.perf_counter()
        for start in range(0, len(batched), batch):
            await pipeline.record_messages(batched[start : start + batch])
        store_batched = time.perf_counter() - started
    finally:
        await database.close()

    per_message_us = {name: value / len(bodies) * 1e6 for name, value in seconds.items()}
    per_message_us["store_1_per_transaction"] = store_single / len(one_by_one) * 1e6
    per_message_us[f"store_{batch}_per_transaction"] = store_batched / len(batched) * 1e6
    return {
        "sample": len(bodies),
        "per_message_us": {k: round(v, 1) for k, v in per_message_us.items()},
        "implied_rate_per_s": {k: round(1e6 / v, 1) for k, v in per_message_us.items() if v},
    }


# --- profile rendering ------------------------------------------------------------------------


LIBRARY_GROUPS: Mapping[str, str] = {
    "jsonschema": "schema validation (jsonschema, referencing, rpds)",
    "referencing": "schema validation (jsonschema, referencing, rpds)",
    "rpds": "schema validation (jsonschema, referencing, rpds)",
    "jsonschema_specifications": "schema validation (jsonschema, referencing, rpds)",
    "sqlalchemy": "SQLAlchemy",
    "aiosqlite": "store driver (aiosqlite, asyncpg)",
    "asyncpg": "store driver (aiosqlite, asyncpg)",
    "sqlite3": "store driver (aiosqlite, asyncpg)",
    "aio_pika": "AMQP client (aio-pika, aiormq, pamqp)",
    "aiormq": "AMQP client (aio-pika, aiormq, pamqp)",
    "pamqp": "AMQP client (aio-pika, aiormq, pamqp)",
    "defusedxml": "XML parsing (defusedxml, ElementTree)",
    "xml": "XML parsing (defusedxml, ElementTree)",
    "dataclasses": "dataclasses.asdict / copy (Alert.to_json)",
    "copy": "dataclasses.asdict / copy (Alert.to_json)",
    "json": "json encode/decode",
    "asyncio": "event loop (uvloop C code: polling, idle, callbacks)",
    "uvloop": "event loop (uvloop C code: polling, idle, callbacks)",
    "dissemination": "dissemination (own code)",
    "bench": "benchmark harness (ledger polling)",
    "pyinstrument": "profiler",
}


def _frame_key(frame: Frame) -> str:
    where = frame.file_path_short or frame.file_path or "?"
    return f"{frame.function}  {where}:{frame.line_no or 0}"


def _library(frame: Frame, inherited: str) -> str:
    """The library group a frame's self time belongs to; built-ins count for their caller."""
    short = frame.file_path_short or ""
    if not short or short.startswith("<"):
        return inherited
    head = Path(short).parts[0].removesuffix(".py")
    return LIBRARY_GROUPS.get(head, f"other ({head})")


@dataclass(slots=True)
class ProfileTables:
    """Aggregates of one profile: self time per frame, self time per library group, and
    inclusive time per dissemination function (counted once per stack however deep)."""

    by_frame: dict[str, float] = field(default_factory=dict)
    by_library: dict[str, float] = field(default_factory=dict)
    by_function: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def top(table: Mapping[str, float], limit: int) -> list[tuple[str, float]]:
        return sorted(table.items(), key=lambda item: item[1], reverse=True)[:limit]


def profile_tables(root: Frame) -> ProfileTables:
    tables = ProfileTables()
    stack: list[tuple[Frame, frozenset[str], str]] = [(root, frozenset(), "other")]
    visited = 0
    while stack and visited < 10_000_000:
        frame, ancestors, inherited = stack.pop()
        visited += 1
        if frame.is_synthetic:
            continue
        key = _frame_key(frame)
        library = _library(frame, inherited)
        own = frame.total_self_time
        tables.by_frame[key] = tables.by_frame.get(key, 0.0) + own
        tables.by_library[library] = tables.by_library.get(library, 0.0) + own
        if "dissemination" in Path(frame.file_path or "").parts and key not in ancestors:
            tables.by_function[key] = tables.by_function.get(key, 0.0) + frame.time
        below = ancestors | {key}
        stack.extend((child, below, library) for child in frame.children)
    return tables


def write_profile(profiler: Profiler, store: str) -> list[str]:
    """Write the HTML and text profiles; return the lines to print."""
    from pyinstrument.renderers import HTMLRenderer

    session = profiler.last_session
    root = session.root_frame() if session is not None else None
    if session is None or root is None:
        return ["profile: no samples were taken"]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    html = RESULTS_DIR / f"intake-{store}.html"
    text = RESULTS_DIR / f"intake-{store}-profile.txt"
    # pyinstrument resamples only past 100,000 samples; a 1 ms profile of a minute is ~100 MB.
    html.write_text(HTMLRenderer().render(session.resample(HTML_RESAMPLE_SECONDS)), "utf-8")
    text.write_text(profiler.output_text(unicode=True, color=False), encoding="utf-8")
    total = root.time or 1.0
    tables = profile_tables(root)

    def rows(table: Mapping[str, float], limit: int) -> list[str]:
        return [
            f"    {secs:7.2f}s {secs / total:6.1%}  {key}"
            for key, secs in ProfileTables.top(table, limit)
        ]

    shown = ProfileTables.top(tables.by_library, LIBRARY_ROWS)
    rest = sum(tables.by_library.values()) - sum(secs for _, secs in shown)
    return [
        f"profile of the service legs: {session.duration:.1f}s wall, {session.cpu_time:.1f}s "
        f"process CPU, {session.sample_count} samples. Main thread only: aiosqlite runs SQLite "
        "on its own threads, so SQLite execution and fsync appear as event-loop idle time.",
        f"  wrote {html} and {text.name}",
        f"  top {TOP_FRAMES} frames by self time:",
        *rows(tables.by_frame, TOP_FRAMES),
        "  self time by library (built-ins count for their caller):",
        *rows(tables.by_library, LIBRARY_ROWS),
        f"    {rest:7.2f}s {rest / total:6.1%}  everything else",
        f"  top {TOP_FRAMES} dissemination functions by inclusive time:",
        *rows(tables.by_function, TOP_FRAMES),
    ]
