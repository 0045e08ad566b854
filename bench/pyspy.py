"""Sampling a running service with py-spy (when installed), every process it started
included, and the functions with the most samples in what it wrote."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from bench.common import BenchError


async def start_sampling(pid: int, seconds: float, output: Path) -> asyncio.subprocess.Process:
    """py-spy sampling `pid` and its children for `seconds`, collapsed stacks to `output`."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(py_spy, os.X_OK):
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    output.parent.mkdir(exist_ok=True)
    return await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--subprocesses",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "100",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def print_profile(path: Path, top: int = 25) -> None:
    """The functions with the most samples in py-spy's collapsed stacks: on their own (the
    innermost frame) and in all (anywhere on the stack)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [frame.split(" (")[0] + " " + frame.split("/")[-1] for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    print(f"\nprofile of the service: {samples} samples")
    for title, counts in (("own", own), ("in all", total)):
        print(f"  most samples {title}:")
        for frame, count in counts.most_common(top):
            print(f"    {100 * count / max(samples, 1):5.1f}%  {frame}")
