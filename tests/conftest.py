"""Shared fixtures: an isolated RabbitMQ virtual host per test session, per-test exchange and
queue names inside it, and the store on both SQLite and PostgreSQL (a database per session)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from argon2 import profiles
from sqlalchemy import text

from channels.base import CHANNEL_NAMES
from dissemination.accounts.passwords import HASHER
from dissemination.broker.dispatch import delivery_queue, retry_queues, urgent_queue
from dissemination.broker.topology import broker_url
from dissemination.controls.record import GENESIS
from dissemination.logs import configure_structlog
from dissemination.service import Service
from dissemination.settings import Settings, StoreSettings, load_settings
from dissemination.store.database import Database
from dissemination.store.tables import (
    dissemination_chain,
    metadata,
)
from tests.brokerutil import open_connection
from tests.logcapture import LogLines, capturing
from tests.pg import psql

_names = itertools.count(1)


def _rabbitmqctl(*args: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl not found: these tests need a local RabbitMQ")
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session", autouse=True)
def structured_logs() -> None:
    """Our log lines go through the standard library's logging, as in the service."""
    configure_structlog()


@pytest.fixture(scope="session", autouse=True)
def cheapest_password_hashes() -> Iterator[None]:
    """argon2's cheapest parameters for the passwords tests make: the service's own (64 MiB,
    three passes) cost a second a hash on a busy two-core machine, and the suite makes hundreds.
    Hashing and verifying run through the same code; only the cost parameters differ."""
    service_parameters = HASHER._parameters
    HASHER._parameters = profiles.CHEAPEST
    yield
    HASHER._parameters = service_parameters


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """A test that runs the CLI's `main` in-process configures logging as the command does
    (its handler, its levels): undone after the test, so no other test depends on the order."""
    watched = [logging.getLogger(), logging.getLogger("twilio")]
    before = [(logger.level, list(logger.handlers)) for logger in watched]
    yield
    for logger, (level, handlers) in zip(watched, before, strict=True):
        logger.setLevel(level)
        logger.handlers[:] = handlers
    logging.captureWarnings(False)


@pytest.fixture
def logged() -> Iterator[LogLines]:
    """The test's log lines as the service writes them in JSON: libraries' from INFO, ours
    from DEBUG. Ask for it before `service` to see the start-up lines too."""
    with capturing() as lines:
        yield lines


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    """A virtual host of our own, so two test runs never consume each other's messages."""
    name = f"fd-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    _rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database for this session, dropped at the end."""
    name = f"fd_test_{uuid.uuid4().hex[:10]}"
    psql(f'CREATE DATABASE "{name}"')
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _migrate_once(url: str, data_dir: Path) -> None:
    """Migrate the store at `url` to head on a loop of its own: a session fixture is first
    asked for inside a test's running loop."""

    async def migrate() -> None:
        database = Database.from_settings(StoreSettings(url, 5, 0.05, 0.2), data_dir)
        await database.migrate()
        await database.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, migrate()).result()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store migrated once per session: each test gets a copy of it rather
    than running every migration again."""
    directory = tmp_path_factory.mktemp("sqlite-template")
    path = directory / "ledger.db"
    _migrate_once(f"sqlite+aiosqlite:///{path}", directory)
    return path


@pytest.fixture(scope="session")
def migrated_pg(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's PostgreSQL database, migrated once: each test empties it afterwards
    (`emptied_pg`), which leaves the schema and its revision as they were."""
    _migrate_once(pg_url, tmp_path_factory.mktemp("pg-migrate"))
    return pg_url


def _emptying_sql() -> str:
    """One statement that empties every table, restarts the sequences and puts back the
    record chain's first row: DELETE rather than TRUNCATE, which costs a second a test on a
    busy machine for tables holding a few rows (it makes new files for every table and index).
    The append-only triggers are set aside for this transaction alone (replica role, which
    also skips foreign-key checks: every table is emptied)."""
    deletes = "".join(f"DELETE FROM {t.name}; " for t in reversed(metadata.sorted_tables))
    return (
        "DO $$ BEGIN SET LOCAL session_replication_role = replica; "
        + deletes
        + "PERFORM setval(format('%I.%I', schemaname, sequencename), start_value, false) "
        "FROM pg_sequences WHERE schemaname = current_schema(); "
        f"INSERT INTO {dissemination_chain.name} (id, seq, last_hash) VALUES (1, 0, '{GENESIS}'); "
        "END $$"
    )


async def emptied_pg(url: str, data_dir: Path) -> None:
    database = Database.from_settings(StoreSettings(url, 5, 0.05, 0.2), data_dir)
    try:
        async with database.transaction() as conn:
            await conn.execute(text(_emptying_sql()))
    finally:
        await database.close()


@pytest.fixture
async def store_url(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A migrated, empty store of the parametrized kind."""
    if store_kind == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = request.getfixturevalue("migrated_pg")
    yield url
    await emptied_pg(url, tmp_path)


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    """The parametrized store (`store_url`), opened for the test and closed after it."""
    database = Database.from_settings(StoreSettings(store_url, 5, 0.05, 0.2), tmp_path)
    yield database
    await database.close()


def settings_env(vhost: str, store_url: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for a service under test: its own names inside the session's vhost."""
    suffix = f"t{next(_names)}-{uuid.uuid4().hex[:6]}"
    env = {
        "DISSEMINATION_SERVICE_DATA_DIR": str(data_dir),
        "DISSEMINATION_SERVICE_SHUTDOWN_GRACE_SECONDS": "10",
        # one process, as before supervised groups: a test that wants several asks for them
        "DISSEMINATION_SERVICE_WORKERS": "1",
        "DISSEMINATION_BROKER_URL": f"amqp://127.0.0.1:5672/{vhost}",
        "DISSEMINATION_BROKER_EXCHANGE": f"alerts.{suffix}",
        "DISSEMINATION_BROKER_INBOUND_QUEUE": f"alerts.inbound.{suffix}",
        "DISSEMINATION_BROKER_DEAD_LETTER_EXCHANGE": f"alerts.dead.{suffix}",
        "DISSEMINATION_BROKER_DEAD_LETTER_QUEUE": f"alerts.dead.{suffix}",
        "DISSEMINATION_BROKER_DELIVERY_EXCHANGE": f"deliveries.{suffix}",
        "DISSEMINATION_BROKER_DELIVERY_QUEUE_PREFIX": f"deliveries.{suffix}.",
        "DISSEMINATION_BROKER_PREFETCH": "16",
        "DISSEMINATION_BROKER_CONCURRENCY": "8",
        "DISSEMINATION_STORE_URL": store_url,
        "DISSEMINATION_STORE_RETRY_INITIAL_SECONDS": "0.05",
        "DISSEMINATION_STORE_RETRY_MAX_SECONDS": "0.2",
        "DISSEMINATION_HTTP_PORT": "0",
        "DISSEMINATION_BROKER_RETRY_DELAY_SECONDS": "0.2",
        # few retry tiers (0.2, 0.8, 2 s): each service a test starts declares them all
        "DISSEMINATION_BROKER_RETRY_MAX_DELAY_SECONDS": "2",
        "DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "DISSEMINATION_RECORD_KEY": "test-record-key-" + "k" * 32,
    }
    env.update({f"DISSEMINATION_{k.upper()}": v for k, v in overrides.items()})
    return env


@pytest.fixture
async def service_env(vhost: str, store_url: str, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Settings for one test; its queues and exchanges are deleted afterwards, so the broker
    does not accumulate hundreds of quorum queues over a run."""
    env = settings_env(vhost, store_url, tmp_path / "data")
    yield env
    await delete_topology(load_settings(env))


async def delete_topology(settings: Settings) -> None:
    """One channel for every delete: RabbitMQ deletes a queue or an exchange that is not
    there without an error, and a channel of its own per delete costs a round trip each."""
    broker = settings.broker
    connection = await aio_pika.connect(broker_url(broker))
    try:
        amqp = await connection.channel()
        for queue in (
            broker.inbound_queue,
            broker.dead_letter_queue,
            *(delivery_queue(broker, channel) for channel in CHANNEL_NAMES),
            *(urgent_queue(broker, channel) for channel in CHANNEL_NAMES),
            *(name for channel in CHANNEL_NAMES for name in retry_queues(broker, channel)),
        ):
            await amqp.queue_delete(queue)
        for exchange in (broker.exchange, broker.dead_letter_exchange, broker.delivery_exchange):
            await amqp.exchange_delete(exchange)
        await amqp.close()
    finally:
        await connection.close()


@pytest.fixture
def settings(service_env: dict[str, str]) -> Settings:
    return load_settings(service_env)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    """The whole service, started in this test's event loop and stopped after it."""
    running = Service(settings)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def channel(settings: Settings, service: Service) -> AsyncIterator[AbstractChannel]:
    """A publisher-confirms channel on the test's virtual host, once the service is up."""
    connection = await open_connection(settings)
    yield await connection.channel(publisher_confirms=True)
    await connection.close()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """Debian's chromium, headless, once per session (tests/browser.py)."""
    from tests.browser import launched_browser

    async for launched in launched_browser():
        yield launched


@pytest.fixture
def empty_store_url(store_kind: str, tmp_path: Path) -> Iterator[str]:
    """A store with no tables at all, of the parametrized kind."""
    if store_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"fd_test_{uuid.uuid4().hex[:10]}"
    psql(f'CREATE DATABASE "{name}"')
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
