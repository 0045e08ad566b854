"""The loopback sinks both legs of the fan-out and latency benchmarks send to, in a process of
their own so that they do not compete with the sender for one interpreter: a webhook receiver
(204), an aiosmtpd SMTP server and the Twilio-compatible fake from the tests.

Webhooks posted under `/latency/` are also timed: the first arrival of each alert (found in the
body by its `LAT-` identifier) on the system-wide monotonic clock, which `GET /latency-report`
returns as `{identifier: seconds}` for the latency benchmark to compare with its publish times.

Webhooks posted under `/alertmanager/` carry Prometheus Alertmanager's body, a notification
of one group with its alerts in `alerts`: the sink counts the alerts in them (as well as the
notifications), which `GET /counts` returns with the other webhooks' count.

    python -m bench.sinks

Prints one JSON line with the ports once all three listen, then serves until stdin closes
(the parent exits or closes the pipe) or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time

from aiohttp import web

from bench.common import run_loop
from testbed.smtp import start_smtp_sink
from testbed.twilio import TwilioFake

LATENCY_IDENTIFIER = re.compile(rb"LAT-[0-9a-f]{8}-[0-9]+")


class Counts:
    """What each sink has accepted (the Twilio fake and the SMTP sink keep their own), and the
    first arrival of each timed alert."""

    webhooks = 0
    alertmanager_notifications = 0
    alertmanager_alerts = 0
    first_arrival: dict[str, float] = {}


async def _webhook(request: web.Request) -> web.Response:
    body = await request.read()
    arrived = time.monotonic()
    Counts.webhooks += 1
    if request.path.startswith("/alertmanager/"):
        Counts.alertmanager_notifications += 1
        Counts.alertmanager_alerts += len(json.loads(body).get("alerts", []))
    elif request.path.startswith("/latency/"):
        found = LATENCY_IDENTIFIER.search(body)
        if found is not None:
            Counts.first_arrival.setdefault(found.group().decode(), arrived)
    return web.Response(status=204)


async def _latency_report(_request: web.Request) -> web.Response:
    return web.json_response(Counts.first_arrival)


async def _counts(_request: web.Request) -> web.Response:
    return web.json_response(
        {
            "webhooks": Counts.webhooks,
            "alertmanager_notifications": Counts.alertmanager_notifications,
            "alertmanager_alerts": Counts.alertmanager_alerts,
        }
    )


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def serve() -> None:
    app = web.Application()
    app.router.add_get("/latency-report", _latency_report)
    app.router.add_get("/counts", _counts)
    app.router.add_post("/{tail:.*}", _webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    webhook_port = runner.addresses[0][1]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with start_smtp_sink() as smtp, TwilioFake() as twilio:
        print(
            json.dumps({"webhook": webhook_port, "smtp": smtp.port, "twilio": twilio.base_url}),
            flush=True,
        )
        waiter = asyncio.create_task(_stdin_closed())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    await runner.cleanup()


if __name__ == "__main__":
    run_loop(serve())
