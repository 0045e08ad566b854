"""`dissemination run --workers N`: one supervising process and N service processes.

The service processes are competing consumers of the same quorum queues (`alerts.inbound`
and the channel queues), so the broker shares the work among them; they share the store,
which must therefore be PostgreSQL (SQLite is one file with one writer). Process 0 is the
lead: it alone serves HTTP and runs the periodic jobs, so that what an HTTP client sees of
one process's memory (the metrics registry, sign-in throttling, the connection limit) is
not split at random among N; the others take intake and deliveries only.

The supervisor forwards SIGTERM and SIGINT to every process and exits when all have
stopped. A process that dies without being told to is started again after a short backoff,
at most `RestartBudget.restarts` times within `RestartBudget.window_seconds` (then the
supervisor stops the others and exits 1); one that exits with status 2, the service's
start-up refusal (a bad setting, an outdated schema, no broker), is not restarted: the
supervisor stops the others and exits 2, as a single process would have. Each process dies
with the supervisor (SIGTERM from the kernel) if the supervisor itself is killed.

The supervisor runs in a process of its own that loads none of the service: `dissemination
run --workers N` replaces itself (exec) with `python -m dissemination.supervisor`, so the
process that only watches N services takes about 30 MB rather than the service's 110."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from dissemination.logs import configure, instance_name
from dissemination.settings import load_settings

log = structlog.stdlib.get_logger(__name__)

START_UP_REFUSED = 2
"""The exit status of a `dissemination` command that refused to start: not worth a retry."""

_PR_SET_PDEATHSIG = 1


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - platforms without affinity


def process_count_argument(text: str) -> int:
    """`--workers N` as argparse reads it: a whole number, 1 or more."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of processes, 1 or more, got {text!r}"
        )
    return count


def die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when `parent` (its supervisor) dies, so a
    supervisor killed outright leaves no service running unsupervised (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request above took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class RestartBudget:
    """How often a process that dies unexpectedly is restarted: at most `restarts` times
    within any `window_seconds`, after a backoff that doubles from `first_delay_seconds` up
    to `max_delay_seconds`."""

    restarts: int = 5
    window_seconds: float = 300.0
    first_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0

    def delay(self, recent: int) -> float:
        return float(min(self.max_delay_seconds, self.first_delay_seconds * 2**recent))


@dataclass
class _Slot:
    """One of the N places a service process runs in, and its recent restarts."""

    index: int
    process: asyncio.subprocess.Process | None = None
    restarts: deque[float] = field(default_factory=deque)


class Supervisor:
    """Starts `count` service processes with `command(index)`, keeps them running, and stops
    them all on SIGTERM/SIGINT (see the module's docstring)."""

    def __init__(
        self,
        count: int,
        command: Callable[[int], Sequence[str]],
        budget: RestartBudget = RestartBudget(),
    ) -> None:
        self.command = command
        self.budget = budget
        self._slots = [_Slot(index) for index in range(count)]
        self._stopping = asyncio.Event()
        self._status = 0

    async def run(self) -> int:
        """Run until every process has stopped; the exit status for the supervisor."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signalled, sig)
        log.info("workers_starting", count=len(self._slots), supervisor=os.getpid())
        try:
            statuses = await asyncio.gather(*(self._keep(slot) for slot in self._slots))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._kill_leftovers()
        status = self._status or (0 if all(code == 0 for code in statuses) else 1)
        log.info("workers_stopped", status=status)
        return status

    def _signalled(self, sig: signal.Signals) -> None:
        log.info("shutting_down", why=f"{sig.name} received", forwarded_to=self._live_pids())
        self._stop_all(sig)

    def _stop_all(self, sig: signal.Signals) -> None:
        self._stopping.set()
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(sig)

    def _live_pids(self) -> list[int]:
        return [
            slot.process.pid
            for slot in self._slots
            if slot.process is not None and slot.process.returncode is None
        ]

    def _fail(self, status: int) -> None:
        if not self._status:
            self._status = status
        self._stop_all(signal.SIGTERM)

    async def _keep(self, slot: _Slot) -> int:
        """Run the slot's process, restarting it within the budget; its last exit status."""
        while True:
            process = await asyncio.create_subprocess_exec(*self.command(slot.index))
            slot.process = process
            log.info("worker_started", index=slot.index, pid=process.pid)
            if self._stopping.is_set():  # a signal came while it was being started
                process.send_signal(signal.SIGTERM)
            code = await process.wait()
            if self._stopping.is_set():
                log.info("worker_exited", index=slot.index, pid=process.pid, status=code)
                return code
            log.error("worker_died", index=slot.index, pid=process.pid, status=code)
            if code == START_UP_REFUSED:
                log.error("worker_refused_to_start", index=slot.index, action="stopping all")
                self._fail(START_UP_REFUSED)
                return code
            now = time.monotonic()
            while slot.restarts and slot.restarts[0] < now - self.budget.window_seconds:
                slot.restarts.popleft()
            if len(slot.restarts) >= self.budget.restarts:
                log.error(
                    "worker_restarts_exhausted",
                    index=slot.index,
                    restarts=len(slot.restarts),
                    window_seconds=self.budget.window_seconds,
                    action="stopping all",
                )
                self._fail(1)
                return code
            delay = self.budget.delay(len(slot.restarts))
            slot.restarts.append(now)
            log.warning("worker_restarting", index=slot.index, after_seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return code

    async def _kill_leftovers(self) -> None:
        """Only if the supervisor itself failed: no process outlives it."""
        for slot in self._slots:
            process = slot.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


def worker_command(index: int, *, config: str | None, only: Sequence[str] | None) -> list[str]:
    """The command line of service process `index` under this supervisor."""
    command = [sys.executable, "-m", "dissemination"]
    if config is not None:
        command += ["--config", config]
    command += ["run", "--worker-index", str(index), "--supervised-by", str(os.getpid())]
    if only is not None:
        command += ["--only", ",".join(only)]
    return command


def supervisor_command(count: int, *, config: str | None, only: Sequence[str] | None) -> list[str]:
    """The command line that `dissemination run --workers count` replaces itself with."""
    command = [sys.executable, "-m", "dissemination.supervisor", "--count", str(count)]
    if config is not None:
        command += ["--config", config]
    if only is not None:
        command += ["--only", ",".join(only)]
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Supervise `--count` service processes (`supervisor_command`), logging as the service
    does, until they have all stopped; the exit status as `Supervisor.run` says."""
    parser = argparse.ArgumentParser(prog="python -m dissemination.supervisor")
    parser.add_argument("--count", type=process_count_argument, required=True)
    parser.add_argument("--config")
    parser.add_argument("--only", type=lambda text: tuple(text.split(",")))
    args = parser.parse_args(argv)
    service = load_settings(config_file=args.config).service
    configure(service.log_level, service.log_format, instance_name(service.instance_name))
    supervisor = Supervisor(
        args.count, lambda index: worker_command(index, config=args.config, only=args.only)
    )
    return asyncio.run(supervisor.run())


if __name__ == "__main__":
    sys.exit(main())
