"""The service as `dissemination run` in a child process, for the benchmarks that measure it
whole (supervisor and worker processes): started, and handed over once it is ready."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bench.common import BenchError, await_ready
from testbed.ports import free_port

READY_SECONDS = 60.0


async def start_service(
    env: dict[str, str], log_path: Path, ready_seconds: float = READY_SECONDS
) -> tuple[asyncio.subprocess.Process, int]:
    """`dissemination run` in a child process logging to `log_path`, once its /readyz
    answers 200 (within `ready_seconds`)."""
    port = free_port()
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
    url = f"http://127.0.0.1:{port}/readyz"
    if await await_ready(url, process, log_path, "the service", ready_seconds):
        return process, port
    process.terminate()
    await process.wait()
    raise BenchError(f"the service was not ready within {ready_seconds:g} s")
