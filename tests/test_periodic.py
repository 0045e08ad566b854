"""Periodic jobs (escalation steps, CAP Acks, scheduled sends, gauges, retention, anchoring):
a failed run only delays the next one, whatever it raised, and `stop` always stops the job."""

from __future__ import annotations

import asyncio
import contextlib

from core.errors import StoreUnavailable
from dissemination.periodic import PeriodicTask
from tests.logcapture import capturing


async def test_a_run_that_raises_is_logged_and_the_job_goes_on() -> None:
    """A bug or an unexpected library error in one run must not end the job for good: an
    escalation job that ended would stop every escalation without a sign."""
    failures = [StoreUnavailable("store down"), RuntimeError("a bug"), KeyError("gone")]
    ran_after = asyncio.Event()

    async def flaky() -> None:
        if failures:
            raise failures.pop(0)
        ran_after.set()

    job = PeriodicTask("flaky", flaky, 0.001)
    with capturing() as logs:
        job.start()
        try:
            await asyncio.wait_for(ran_after.wait(), 10)
        finally:
            await job.stop()
    assert logs.named("job_failed", level="warning", job="flaky", reason="store down")
    raised = logs.named("job_raised", level="error", job="flaky")
    assert len(raised) == 2
    assert "RuntimeError: a bug" in raised[0]["exception"]  # the traceback, for whoever fixes it
    assert "KeyError: 'gone'" in raised[1]["exception"]


async def test_a_periodic_job_that_swallows_its_cancellation_still_stops() -> None:
    """aiormq turns an RPC cancelled mid-call into a channel error, which a job may catch:
    the gauge refresh did, and `stop` then waited for ever."""
    started = asyncio.Event()

    async def swallowing() -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)

    job = PeriodicTask("swallowing", swallowing, 10)
    job.start()
    await started.wait()
    stopping = asyncio.create_task(job.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert stopping in done, "the job did not stop"
