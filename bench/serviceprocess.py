"""The service as `dissemination run` in a child process, for the benchmarks that measure it
whole (supervisor and worker processes): started, and handed over once it is ready."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

import aiohttp

from bench.common import BenchError, Deadline

READY_SECONDS = 60.0


async def start_service(
    env: dict[str, str], log_path: Path, ready_seconds: float = READY_SECONDS
) -> tuple[asyncio.subprocess.Process, int]:
    """`dissemination run` in a child process logging to `log_path`, once its /readyz
    answers 200 (within `ready_seconds`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dissemination",
            "run",
            env={**os.environ, **env, "DISSEMINATION_HTTP_PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    ready_by = Deadline.after(ready_seconds)
    async with aiohttp.ClientSession() as session:
        while not ready_by.expired():
            if process.returncode is not None:
                raise BenchError(
                    f"the service exited with {process.returncode} at start-up:\n"
                    + log_path.read_text(errors="replace")[-2000:]  # noqa: ASYNC240 - once, on failure
                )
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return process, port
            await asyncio.sleep(0.1)
    process.terminate()
    await process.wait()
    raise BenchError(f"the service was not ready within {ready_seconds:g} s")
