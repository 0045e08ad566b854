"""A job run every few seconds until stopped (escalation steps, CAP Acks): a store or broker
outage only delays the next run, and a run that raises anything else is logged with its
traceback and the job goes on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from core.errors import StoreUnavailable
from dissemination.errors import PublishFailed

log = structlog.stdlib.get_logger(__name__)


class PeriodicTask:
    """Runs `job` now and then every `seconds`, in its own task."""

    def __init__(self, name: str, job: Callable[[], Awaitable[object]], seconds: float) -> None:
        self.name = name
        self.job = job
        self.seconds = seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        task = asyncio.current_task()
        while True:
            try:
                await self.job()
            except (StoreUnavailable, PublishFailed) as error:
                log.warning("job_failed", job=self.name, retry_in=self.seconds, reason=str(error))
            except Exception:
                # Anything else (a bug, a library's unexpected error) fails this run only: the
                # job ending for good would stop escalations or scheduled sends without a sign.
                log.exception("job_raised", job=self.name, retry_in=self.seconds)
            if task is not None and task.cancelling():
                # a library swallowed the stop's cancellation mid-call (aiormq does, in an
                # RPC): stop all the same, or `stop` waits for ever
                raise asyncio.CancelledError
            await asyncio.sleep(self.seconds)
