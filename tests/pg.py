"""Administrative SQL against the local PostgreSQL (databases for tests, simulated outages)."""

from __future__ import annotations

import subprocess


def psql(sql: str) -> None:
    """Run one statement as the postgres user in the `test` database."""
    subprocess.run(
        ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )
