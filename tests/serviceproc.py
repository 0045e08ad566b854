"""Runs `python -m dissemination` in a child process, as production does, for crash and signal
tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from testbed.ports import free_port


async def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run the CLI to completion; returns (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dissemination",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class ServiceProcess:
    """A `dissemination run` child process and the port its HTTP server listens on."""

    process: asyncio.subprocess.Process
    port: int

    log_path: Path | None = None

    @classmethod
    async def start(
        cls,
        env: dict[str, str],
        failpoints: str = "",
        *,
        wait_ready: bool = True,
        args: Sequence[str] = (),
        log_path: Path | None = None,
        port: int | None = None,
    ) -> ServiceProcess:
        """`dissemination run *args` (HTTP on `port`, or a free one); with `log_path`, its log
        (JSON lines unless `env` says otherwise) goes to that file."""
        port = port or free_port()
        child_env = {"DISSEMINATION_SERVICE_LOG_FORMAT": "json", **os.environ, **env}
        child_env["DISSEMINATION_HTTP_PORT"] = str(port)
        child_env["DISSEMINATION_FAILPOINTS"] = failpoints
        with log_path.open("wb") if log_path else contextlib.nullcontext() as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dissemination", "run", *args, env=child_env, stderr=log
            )
        running = cls(process, port, log_path)
        try:
            if wait_ready and not args:
                await running.wait_ready()
            elif wait_ready:
                await running.wait_logged("service_started")
        except BaseException:  # a child that never became ready must not outlive its test
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        return running

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def events(self) -> list[dict[str, Any]]:
        """The process's JSON log lines, parsed (a line it was writing when read is skipped)."""
        events = []
        for line in self.log().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def logged(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """The lines of this event whose fields have these values."""
        return [
            e
            for e in self.events()
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_logged(self, event: str, timeout: float = 30, **fields: Any) -> None:
        """Wait for `event` (with these fields) in the process's log (for processes without
        an HTTP server)."""
        deadline = time.monotonic() + timeout
        while not self.logged(event, **fields):
            if self.process.returncode is not None:
                raise AssertionError(f"service exited early: {self.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{event!r} not logged: {self.log()[-2000:]}")
            await asyncio.sleep(0.05)

    async def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(f"service exited early with {self.process.returncode}")
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("service did not become ready")

    async def wait_exit(self, timeout: float = 30) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.terminate()
        return await self.wait_exit()
