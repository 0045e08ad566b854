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
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports on 127.0.0.1 that nothing listens on now, for
    servers that number their ports from one (the processes of `dissemination run`)."""
    for _ in range(200):
        first = random.choice(LISTEN_PORTS[: len(LISTEN_PORTS) - count + 1])
        if all(_bindable(port) for port in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} free ports in a row in {LISTEN_PORTS}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
