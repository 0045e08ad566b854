"""What one destination can do to a task's other rows: nothing. A Retry-After, however long,
waits at most the retry schedule's cap (the attempt counting), and a row whose outcome cannot
be made into a settlement fails alone, while the rows sent with it in the same task are still
sent and recorded."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web

from channels.base import Outcome
from channels.webhook import WebhookChannel
from dissemination.delivery.worker import DeliveryWorker
from dissemination.retrying import RetrySchedule
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from tests.brokerutil import wait_until
from tests.deliveryrig import publish_alert, rows_of, serve_on_loopback, settled
from tests.people import enrol

HUGE_RETRY_AFTER = "99999999999999999999"  # seconds: 3e12 years, past any datetime


def high(low: float, top: float) -> float:
    return top


def test_a_retry_after_beyond_the_cap_counts_as_the_cap() -> None:
    schedule = RetrySchedule(30, 3600, 10)
    assert schedule.delay(1, retry_after=float(HUGE_RETRY_AFTER), uniform=high) == 3600
    assert schedule.delay(1, retry_after=math.inf, uniform=high) == 3600
    assert schedule.delay(1, retry_after=3599, uniform=high) == 3599
    assert schedule.delay(2, retry_after=math.nan, uniform=high) == 60  # unreadable: ignored


def test_a_retry_after_in_digits_other_than_ascii_is_ignored() -> None:
    # "²".isdigit() holds, but float("²") raises: the send must still be a plain 503
    result = WebhookChannel._classify(503, {"Retry-After": "²"})
    assert (result.outcome, result.detail, result.retry_after_seconds) == (
        Outcome.TRANSIENT,
        "HTTP 503",
        None,
    )
    huge = WebhookChannel._classify(429, {"Retry-After": f" {HUGE_RETRY_AFTER} "})
    assert huge.retry_after_seconds == float(HUGE_RETRY_AFTER)  # the schedule caps it


@pytest.fixture
def settings(service_env: dict[str, str]) -> Settings:
    """Two attempts, so that a row that keeps failing ends (failed) soon after its retry."""
    return load_settings(service_env | {"DISSEMINATION_BROKER_MAX_ATTEMPTS": "2"})


@dataclass
class Receiver:
    """Webhook receivers by path: `huge` answers 503 asking for a retry in 3e12 years, `busy`
    503, `held` 200 once the test sets `release`; anything else 200."""

    base: str = ""
    calls: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await request.read()
        async with self.arrived:
            self.calls[name] += 1
            self.arrived.notify_all()
        if name == "held":
            await self.release.wait()
        if name == "huge":
            return web.Response(status=503, headers={"Retry-After": HUGE_RETRY_AFTER})
        return web.Response(status=503 if name == "busy" else 200)

    async def called(self, name: str, times: int, timeout: float = 20) -> None:
        """Return once `name` has been called `times` times; fail after `timeout` seconds."""
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: self.calls[name] >= times)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", state.handle)
    runner, state.base = await serve_on_loopback(app)
    yield state
    state.release.set()
    await runner.cleanup()


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["address"].rsplit("/", 1)[1]: row for row in rows}


def _webhook_worker(service: Service) -> DeliveryWorker:
    return next(w for w in service.workers if w.channel == "webhook")


async def test_a_huge_retry_after_waits_the_cap_and_strands_no_neighbour(
    service: Service, channel: AbstractChannel, settings: Settings, receiver: Receiver
) -> None:
    await enrol(service, "Huge", {"webhook": receiver.base + "huge"})
    await enrol(service, "Held", {"webhook": receiver.base + "held"})
    alert_id = await publish_alert(channel, settings, "RETRY-AFTER-HUGE")
    await receiver.called("held", 1)
    # retried once the cap (2 s here) is over, while its neighbour is still being sent
    await receiver.called("huge", 2, timeout=15)
    receiver.release.set()
    rows = _by_name(await settled(service, alert_id, 2))
    assert (rows["huge"]["state"], rows["huge"]["attempts"], rows["huge"]["reason"]) == (
        "failed",
        2,
        "gave up after 2 attempts: HTTP 503",
    )
    assert (rows["held"]["state"], rows["held"]["attempts"], rows["held"]["resent"]) == (
        "sent",
        1,
        False,
    )
    assert receiver.calls == {"huge": 2, "held": 1}


class UnboundedSchedule(RetrySchedule):
    """A retry schedule with a bug: a delay past any datetime."""

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        uniform: Callable[[float, float], float] = high,
    ) -> float:
        return float(HUGE_RETRY_AFTER)


async def test_a_row_whose_outcome_cannot_be_recorded_fails_alone(
    service: Service, channel: AbstractChannel, settings: Settings, receiver: Receiver
) -> None:
    worker = _webhook_worker(service)
    schedule = worker.schedule
    worker.schedule = UnboundedSchedule(
        schedule.base_seconds, schedule.cap_seconds, schedule.max_attempts
    )
    await enrol(service, "Busy", {"webhook": receiver.base + "busy"})
    await enrol(service, "Held", {"webhook": receiver.base + "held"})
    alert_id = await publish_alert(channel, settings, "OUTCOME-NOT-RECORDED")
    await receiver.called("held", 1)

    async def busy_failed() -> bool:
        row = _by_name(await rows_of(service, alert_id)).get("busy")
        return row is not None and row["state"] == "failed"

    await wait_until(busy_failed, timeout=15, what="the busy row failed")
    receiver.release.set()  # its neighbour was in flight all along
    rows = _by_name(await settled(service, alert_id, 2))
    assert (rows["busy"]["attempts"], rows["busy"]["reason"]) == (
        1,
        "internal error recording the outcome (transient: HTTP 503): OverflowError",
    )
    assert (rows["held"]["state"], rows["held"]["attempts"], rows["held"]["resent"]) == (
        "sent",
        1,
        False,
    )
    assert receiver.calls == {"busy": 1, "held": 1}
