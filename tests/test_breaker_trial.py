"""A half-open circuit's trial send always gives its slot back: with an outcome (`record`),
without one when the send is cancelled (`abandon`: a task failing on a store outage cancels
the sends still in flight), and, as a backstop, once it is older than the trial timeout.
Otherwise the circuit would refuse its host (for email or SMS, the whole channel) for as long
as the process lives."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web

import dissemination.delivery.worker as worker_module
from core.errors import StoreUnavailable
from dissemination.delivery.breaker import CircuitBreakers
from dissemination.delivery.claims import Settlement, SettleResult
from dissemination.service import Service
from dissemination.settings import Settings
from tests.brokerutil import wait_until
from tests.deliveryrig import publish_alert, rows_of, serve_on_loopback
from tests.people import enrol

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _half_open(breakers: CircuitBreakers, host: str) -> datetime:
    """Open `host`'s circuit at T0; returns when its cooldown is over."""
    for _ in range(breakers.threshold):
        breakers.record(host, failed=True, now=T0)
    return T0 + breakers.cooldown


def test_an_abandoned_trial_frees_the_slot_and_counts_nothing() -> None:
    breakers = CircuitBreakers(failures=2, cooldown_seconds=30)
    later = _half_open(breakers, "a")
    assert breakers.allow("a", later)  # the trial
    assert not breakers.allow("a", later)
    breakers.abandon("a")
    assert breakers.is_open("a")  # neither a success ...
    assert breakers.retry_at("a", later) == later  # ... nor a failure (no new cooldown)
    assert breakers.allow("a", later)  # the next row is the trial
    assert not breakers.allow("a", later)
    breakers.abandon("b")  # a host without a circuit: nothing to do


def test_a_trial_that_never_reports_is_taken_over_after_the_trial_timeout() -> None:
    breakers = CircuitBreakers(failures=1, cooldown_seconds=30, trial_timeout_seconds=60)
    later = _half_open(breakers, "a")
    assert breakers.allow("a", later)
    assert not breakers.allow("a", later + timedelta(seconds=59))
    assert breakers.allow("a", later + timedelta(seconds=60))  # presumed lost
    assert not breakers.allow("a", later + timedelta(seconds=61))
    breakers.record("a", failed=False, now=later + timedelta(seconds=62))
    assert not breakers.is_open("a")


def test_rows_refused_while_the_trial_is_under_way_wait_before_coming_back() -> None:
    breakers = CircuitBreakers(failures=1, cooldown_seconds=30)
    later = _half_open(breakers, "a")
    assert breakers.retry_at("a", later) == later  # the cooldown is over: try now
    assert breakers.allow("a", later)  # the trial
    # not at once, which republished them in a loop for as long as the trial lasted
    assert breakers.retry_at("a", later) == later + timedelta(seconds=1)
    short = CircuitBreakers(failures=1, cooldown_seconds=0.2)
    soon = _half_open(short, "a")
    assert short.allow("a", soon)
    assert short.retry_at("a", soon) == soon + timedelta(seconds=0.2)  # never past a cooldown
    breakers.record("a", failed=True, now=later + timedelta(seconds=5))
    assert breakers.retry_at("a", later + timedelta(seconds=5)) == later + timedelta(seconds=35)


@dataclass
class Receiver:
    """A webhook receiver that hangs on its first request when `hang_first` is set (until the
    fixture ends), and answers 200 to every other one."""

    hang_first: bool
    base: str = ""
    calls: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        async with self.arrived:
            self.calls[request.match_info["name"]] += 1
            first = self.calls.total() == 1
            self.arrived.notify_all()
        if first and self.hang_first:
            await self.release.wait()
        return web.Response(status=200)

    async def called(self, times: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: self.calls.total() >= times)


async def _serve(receiver: Receiver) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/{name}", receiver.handle)
    runner, receiver.base = await serve_on_loopback(app)
    return runner


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    """Two hosts (circuits are per host and port): the trial's, which hangs on the trial
    send, and a quick one's."""
    trial, quick = Receiver(hang_first=True), Receiver(hang_first=False)
    runners = [await _serve(trial), await _serve(quick)]
    yield trial, quick
    trial.release.set()
    for runner in runners:
        await runner.cleanup()


async def test_a_cancelled_trial_send_leaves_its_hosts_circuit_usable(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    receivers: tuple[Receiver, Receiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trial, quick = receivers
    await enrol(service, "Behind the circuit", {"webhook": trial.base + "trial"})
    await enrol(service, "Elsewhere", {"webhook": quick.base + "quick"})
    worker = next(w for w in service.workers if w.channel == "webhook")
    host = urlsplit(trial.base).netloc
    for _ in range(worker.breakers.threshold):  # the host was down, its cooldown is over
        worker.breakers.record(host, failed=True, now=worker.clock() - timedelta(hours=1))

    # The store goes away when the quick row's outcome is recorded, with the trial in flight:
    # the task fails and its trial send is cancelled.
    monkeypatch.setattr(worker_module, "SETTLE_RETRY_DELAYS", (0,))
    real_settle = worker.store.settle
    failed_settles = 0

    async def settle(settlements: list[Settlement], now: datetime) -> SettleResult:
        nonlocal failed_settles
        if failed_settles < 2:
            await trial.called(1)
            failed_settles += 1
            raise StoreUnavailable("the store restarted")
        return await real_settle(settlements, now)

    monkeypatch.setattr(worker.store, "settle", settle)
    await publish_alert(channel, settings, "TRIAL-CANCELLED")

    async def store_failed() -> bool:
        return failed_settles == 2

    await wait_until(store_failed, what="the task to fail on the store")

    # The host is back: the next row to it is the next trial, which closes the circuit.
    second = await publish_alert(channel, settings, "AFTER-THE-OUTAGE")

    async def sent() -> bool:
        rows: list[dict[str, Any]] = await rows_of(service, second)
        return len(rows) == 2 and all(row["state"] == "sent" for row in rows)

    await wait_until(sent, timeout=15, what="both rows of the next alert sent")
    assert trial.calls == {"trial": 2}
    assert not worker.breakers.is_open(host)
