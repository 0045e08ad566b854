"""The peer leg of the webhook fan-out benchmark: Prometheus Alertmanager delivering N alerts as
N webhooks to the same loopback sink, timed the same way as our service and the raw client.

`bench.fanout --peer alertmanager` runs it in each run of the webhook channel. Alertmanager
(Debian's `prometheus-alertmanager`, found on PATH or at /usr/bin) runs as a child process
with a configuration written to a temporary directory: one route, every alert to one webhook
receiver pointing at the sink's `/alertmanager/` path, `group_by: ['...']` (every alert its own
group, hence one notification per alert), `group_wait: 0s`; its own `--storage.path`, the web
API on a free 127.0.0.1 port and clustering off (`--cluster.listen-address=`).

The clock starts before the first of N alerts (distinct labels) is posted to `/api/v2/alerts`
in batches, and stops when the sink has counted N alerts in Alertmanager's notifications (its
webhook body carries a group's alerts in `alerts`; with no grouping each holds one).

What the peer does per notification, against what our service does per row: Alertmanager
keeps alerts in memory, dedups each notification against its notification log (a snapshot on
disk written every 15 minutes), and POSTs a JSON body to the receiver, retrying failures for a
while. It records no per-recipient outcome anywhere durable, signs nothing, holds no contact
directory, no need-to-know clearance, no acknowledgment token and no audit; a crash loses
what was in flight. Our service writes a row per recipient in the store before it sends, and
records each row's outcome after.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.common import BenchError, Deadline, await_ready

BINARY = "prometheus-alertmanager"
DEBIAN_PATH = Path("/usr/bin") / BINARY
INSTALL_HINT = "apt-get install prometheus-alertmanager"
BATCH = 500
"""Alerts per POST to /api/v2/alerts."""
POLL_SECONDS = 0.05
READY_SECONDS = 30.0
GROUP_INTERVAL = "5m"
"""Only a group's first notification is timed (after group_wait, 0 s); group_interval paces
the later ones of a group, and a short one only adds re-checks of 10,000 idle groups."""


def binary() -> str | None:
    """Alertmanager's executable, or None when it is not installed."""
    found = shutil.which(BINARY)
    if found is not None:
        return found
    return str(DEBIAN_PATH) if DEBIAN_PATH.exists() else None


def missing_message() -> str:
    return (
        f"Prometheus Alertmanager ({BINARY}) is not installed, so the peer leg is skipped; "
        f"install it with: {INSTALL_HINT}"
    )


def config_text(sink_port: int) -> str:
    """Every alert to one webhook receiver on the sink, one notification per alert."""
    return f"""route:
  receiver: sink
  group_by: ['...']
  group_wait: 0s
  group_interval: {GROUP_INTERVAL}
  repeat_interval: 4h
receivers:
  - name: sink
    webhook_configs:
      - url: http://127.0.0.1:{sink_port}/alertmanager/
        send_resolved: false
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alerts(count: int, series: str) -> list[dict[str, object]]:
    """`count` firing alerts, each with distinct labels."""
    return [
        {
            "labels": {
                "alertname": "FlashFloodWarning",
                "series": series,
                "target": str(n),
                "severity": "severe",
            },
            "annotations": {"summary": "Flash Flood Warning for Cleveland County, OK"},
            "generatorURL": "http://127.0.0.1/bench",
        }
        for n in range(count)
    ]


async def sink_count(session: aiohttp.ClientSession, sink_port: int) -> int:
    async with session.get(f"http://127.0.0.1:{sink_port}/counts") as response:
        counts = await response.json()
        return int(counts["alertmanager_alerts"])


async def _ready(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    if not await await_ready(f"{url}/-/ready", process, log, "alertmanager", READY_SECONDS):
        raise BenchError(f"alertmanager was not ready within {READY_SECONDS:g} s")


async def peer_leg(count: int, sink_port: int, deadline: Deadline) -> tuple[int, float, str]:
    """Run Alertmanager, post `count` alerts and time until the sink has them all; returns
    (alerts received, seconds, note), the note empty when all arrived."""
    executable = binary()
    if executable is None:
        raise BenchError(missing_message())
    with tempfile.TemporaryDirectory(prefix="fd-bench-am-") as scratch:
        folder = Path(scratch)
        config = folder / "alertmanager.yml"
        config.write_text(config_text(sink_port))
        log = folder / "alertmanager.log"
        url = f"http://127.0.0.1:{_free_port()}"
        with log.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                executable,
                f"--config.file={config}",
                f"--storage.path={folder / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
                "--cluster.listen-address=",
                "--log.level=warn",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file,
            )
        try:
            async with aiohttp.ClientSession() as session:
                await _ready(url, process, log)
                return await _timed(session, url, sink_port, count, deadline)
        finally:
            if process.returncode is None:
                process.terminate()
            await asyncio.wait_for(process.wait(), 30)


async def _timed(
    session: aiohttp.ClientSession, url: str, sink_port: int, count: int, deadline: Deadline
) -> tuple[int, float, str]:
    before = await sink_count(session, sink_port)
    batch = alerts(count, uuid.uuid4().hex[:8])
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        body = json.dumps(batch[first : first + BATCH]).encode()
        async with session.post(
            f"{url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            if response.status != 200:
                raise BenchError(
                    f"alertmanager answered {response.status}: {await response.text()}"
                )
    received = 0
    while received < count and not deadline.expired():
        await asyncio.sleep(POLL_SECONDS)
        received = await sink_count(session, sink_port) - before
    seconds = time.perf_counter() - started
    note = "" if received == count else f"{received} of {count} received"
    return received, seconds, note
