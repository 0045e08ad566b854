"""How many service processes `dissemination run` starts, and how one process of a supervised
group runs (`dissemination.supervisor` starts and watches them)."""

from __future__ import annotations

from dataclasses import replace

from core.errors import DisseminationError
from dissemination.service import Service, run_until_signalled
from dissemination.settings import Settings
from dissemination.store.database import sqlite_file
from dissemination.supervisor import cores, die_with_parent


def process_count(asked: int | None, settings: Settings) -> int:
    """How many service processes `run` starts: `asked` (--workers), else `service.workers`,
    where 0 means one per core. SQLite allows one: asking for more is refused; the default
    is then one process."""
    configured = asked if asked is not None else settings.service.workers
    embedded = sqlite_file(settings.store, settings.data_path) is not None
    if configured == 0:
        return 1 if embedded else cores()
    if configured > 1 and embedded:
        raise DisseminationError(
            f"{configured} service processes need the shared PostgreSQL store: the SQLite "
            "store is one file with one writer. Set store.url to a PostgreSQL database, or "
            "run one process (--workers 1)"
        )
    return configured


async def run_supervised(
    settings: Settings, index: int, supervisor: int | None, only: tuple[str, ...] | None
) -> int:
    """Service process `index` of a supervised group: process 0 is the lead (HTTP and the
    periodic jobs); each process's own metrics listener, if any, is on metrics.port + index."""
    if supervisor is not None:
        die_with_parent(supervisor)
    if settings.metrics.port:
        metrics = replace(settings.metrics, port=settings.metrics.port + index)
        settings = replace(settings, metrics=metrics)
    await run_until_signalled(Service(settings, only=only, lead=index == 0))
    return 0
