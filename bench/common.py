"""Shared benchmark plumbing: a hard deadline, throw-away RabbitMQ virtual hosts and PostgreSQL
databases (always removed, even on failure), the event loop runner, realistic CAP 1.2 XML
alerts built in code, machine context, and small statistics helpers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_MAINTENANCE_DB = "postgres"
COMMAND_TIMEOUT_SECONDS = 60.0
CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_CONTENT_TYPE = "application/cap+xml"


class BenchError(Exception):
    """The benchmark cannot go on (missing tool, broken set-up, invalid alerts)."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point on the monotonic clock after which every loop stops and reports what it has."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at


# --- throw-away broker and database resources -------------------------------------------------


def _run_tool(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        raise BenchError(f"{argv[0]} not found on PATH: the benchmark needs it")
    try:
        done = subprocess.run(
            list(argv), check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS
        )
    except subprocess.CalledProcessError as error:
        raise BenchError(f"{' '.join(argv)} failed: {error.stderr.strip()}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(argv)} timed out") from None
    return done.stdout


def rabbitmqctl(*args: str) -> str:
    return _run_tool(["rabbitmqctl", "-q", *args])


def psql(sql: str, database: str = PG_MAINTENANCE_DB) -> str:
    connection = ["-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", database]
    return _run_tool(["psql", "-q", "-At", *connection, "-c", sql])


class CollectorTime:
    """Seconds the cyclic garbage collector has run in this process since `install`."""

    seconds = 0.0
    _started = 0.0

    @classmethod
    def install(cls) -> None:
        if cls._on_collection not in gc.callbacks:
            gc.callbacks.append(cls._on_collection)

    @classmethod
    def _on_collection(cls, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            cls._started = time.perf_counter()
        else:
            cls.seconds += time.perf_counter() - cls._started


@dataclass
class Resources:
    """Everything created on shared servers; `release_all` removes what is left, in reverse."""

    _undo: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def _push(self, what: str, undo: Callable[[], object]) -> None:
        self._undo.append((what, undo))

    def _release(self, what: str) -> None:
        for index in range(len(self._undo) - 1, -1, -1):
            name, undo = self._undo[index]
            if name == what:
                del self._undo[index]
                try:
                    undo()
                except BenchError as error:
                    print(f"cleanup of {what} failed: {error}", file=sys.stderr)
                return

    def release_all(self) -> None:
        while self._undo:
            self._release(self._undo[-1][0])

    @contextlib.contextmanager
    def vhost(self) -> Iterator[str]:
        """A fresh RabbitMQ virtual host that guest may use; deleted on exit."""
        name = f"fd-bench-{uuid.uuid4().hex[:10]}"
        what = f"vhost {name}"
        self._push(what, lambda: rabbitmqctl("delete_vhost", name))
        rabbitmqctl("add_vhost", name)
        try:
            rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
            yield name
        finally:
            self._release(what)

    @contextlib.contextmanager
    def pg_database(self) -> Iterator[str]:
        """A fresh PostgreSQL database; its async URL is yielded and it is dropped on exit."""
        name = f"fd_bench_{uuid.uuid4().hex[:10]}"
        what = f"database {name}"
        self._push(what, lambda: psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        psql(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            self._release(what)


# --- event loop -------------------------------------------------------------------------------


def event_loop_name() -> str:
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - unsupported platforms
        return "asyncio"


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (as the service's CLI does), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


# --- alerts -----------------------------------------------------------------------------------

_COUNTIES = (
    ("Cleveland", "040027", "OKC027"),
    ("McClain", "040087", "OKC087"),
    ("Garvin", "040049", "OKC049"),
    ("Grady", "040051", "OKC051"),
    ("Pottawatomie", "040125", "OKC125"),
    ("Oklahoma", "040109", "OKC109"),
)

_DESCRIPTION = (
    "At {hhmm} CST, a severe thunderstorm was located near {county}, moving east at 35 mph. "
    "HAZARD...60 mph wind gusts and quarter size hail. SOURCE...Radar indicated. "
    "IMPACT...Expect damage to roofs, siding and trees. Locations impacted include {county}, "
    "{neighbour} and Purcell. Storm {index} of this series."
)

_INSTRUCTION = "For your protection move to an interior room on the lowest floor of a building."


def _polygon(index: int) -> str:
    """A closed ring of eleven points around a centre that moves with `index`."""
    lat = 34.60 + (index % 97) * 0.011
    lon = -97.90 + (index % 89) * 0.013
    offsets = (
        (0.00, 0.00),
        (0.05, 0.12),
        (0.11, 0.21),
        (0.18, 0.26),
        (0.22, 0.35),
        (0.15, 0.44),
        (0.04, 0.41),
        (-0.05, 0.33),
        (-0.09, 0.20),
        (-0.06, 0.08),
    )
    points = [f"{lat + dlat:.2f},{lon + dlon:.2f}" for dlat, dlon in offsets]
    return " ".join([*points, points[0]])


def cap_alert_xml(index: int, series: str, now: datetime) -> bytes:
    """A valid CAP 1.2 alert of about 2 KB, modelled on an NWS severe thunderstorm warning:
    one info block with event codes and parameters, one area with a polygon and geocodes.
    The identifier is distinct for every (series, index)."""
    zone = timezone(timedelta(hours=-6))
    sent = (now - timedelta(seconds=index % 3600)).astimezone(zone).replace(microsecond=0)
    expires = sent + timedelta(hours=6)
    first = index % len(_COUNTIES)
    counties = [_COUNTIES[(first + k) % len(_COUNTIES)] for k in range(3)]
    geocodes = "".join(
        f"<geocode><valueName>SAME</valueName><value>{same}</value></geocode>"
        for _, same, _ in counties
    ) + "".join(
        f"<geocode><valueName>UGC</valueName><value>{ugc}</value></geocode>"
        for _, _, ugc in counties
    )
    area_desc = "; ".join(f"{name}, OK" for name, _, _ in counties)
    description = _DESCRIPTION.format(
        hhmm=sent.strftime("%I%M %p"), county=counties[0][0], neighbour=counties[1][0], index=index
    )
    identifier = f"urn:oid:2.49.0.1.840.0.{series}.{index:07d}"
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{CAP_NS}">
  <identifier>{identifier}</identifier>
  <sender>w-nws.webmaster@noaa.gov</sender>
  <sent>{sent.isoformat()}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <code>IPAWSv1.0</code>
  <info>
    <language>en-US</language>
    <category>Met</category>
    <event>Severe Thunderstorm Warning</event>
    <responseType>Shelter</responseType>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <eventCode><valueName>SAME</valueName><value>SVR</value></eventCode>
    <eventCode><valueName>NationalWeatherService</valueName><value>SVW</value></eventCode>
    <effective>{sent.isoformat()}</effective>
    <onset>{sent.isoformat()}</onset>
    <expires>{expires.isoformat()}</expires>
    <senderName>NWS Norman OK</senderName>
    <headline>Severe Thunderstorm Warning issued for {counties[0][0]} County by NWS Norman OK\
</headline>
    <description>{description}</description>
    <instruction>{_INSTRUCTION}</instruction>
    <web>https://www.weather.gov</web>
    <parameter><valueName>AWIPSidentifier</valueName><value>SVROUN</value></parameter>
    <parameter><valueName>maxHailSize</valueName><value>1.00</value></parameter>
    <parameter><valueName>maxWindGust</valueName><value>60 MPH</value></parameter>
    <area>
      <areaDesc>{area_desc}</areaDesc>
      <polygon>{_polygon(index)}</polygon>
      {geocodes}
    </area>
  </info>
</alert>
"""
    return "\n".join(line.strip() for line in document.splitlines()).encode()


def cap_alert_bodies(count: int, series: str | None = None) -> list[bytes]:
    """`count` distinct alerts of one series (a random series unless given)."""
    tag = series or uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    return [cap_alert_xml(index, tag, now) for index in range(count)]


# --- context and statistics -------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def filesystem_of(path: Path) -> str:
    """The file system type holding `path` (from /proc/mounts), e.g. "ext4" or "tmpfs"."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_context() -> dict[str, Any]:
    """Where the numbers were taken: hardware, load, interpreter, loop and library versions."""
    packages = (
        "aio-pika",
        "aiormq",
        "sqlalchemy",
        "aiosqlite",
        "asyncpg",
        "jsonschema",
        "defusedxml",
    )
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "event_loop": event_loop_name(),
        "sqlite_library": sqlite3.sqlite_version,
        "packages": {name: _version(name) for name in packages},
    }


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rate(messages: int, seconds: float) -> float:
    return messages / seconds if seconds > 0 else 0.0


def write_results(name: str, results: Any) -> Path:
    """Write a benchmark's results as bench/results/<name>.json, say so, and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
    return path


async def await_ready(
    url: str,
    process: asyncio.subprocess.Process,
    log: Path,
    what: str,
    seconds: float,
) -> bool:
    """Poll `url` every 0.1 s until it answers 200 (True) or `seconds` pass (False); a
    BenchError with the tail of `log` if `process` (`what`) exits first."""
    import aiohttp  # only the benchmarks that start a process need it

    ready_by = Deadline.after(seconds)
    async with aiohttp.ClientSession() as session:
        while not ready_by.expired():
            if process.returncode is not None:
                raise BenchError(
                    f"{what} exited with {process.returncode}:\n"
                    + log.read_text(errors="replace")[-2000:]  # noqa: ASYNC240 - once, on failure
                )
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return True
            await asyncio.sleep(0.1)
    return False
