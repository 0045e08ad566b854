"""Ports for the servers that tests, benchmarks and scripts start on loopback."""

from __future__ import annotations

import random
import socket

LISTEN_PORTS = range(20_000, 32_000)
"""Where server ports are picked: below Linux's ephemeral range (32768 and up), so that no
outgoing connection of a test running in parallel takes one between its pick and its bind,
as it could when the kernel picked a free port ("address already in use", seen in CI)."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a server a test starts."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {LISTEN_PORTS}")
