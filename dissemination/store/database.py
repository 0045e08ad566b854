"""The database connection: engine set-up for SQLite and PostgreSQL, migrations, and the one
place where driver failures become StoreUnavailable."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Table, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from core.errors import ConfigError, StoreUnavailable
from core.masking import mask_text
from dissemination.errors import SchemaOutOfDate
from dissemination.settings import StoreSettings

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.DisconnectionError,
    exc.TimeoutError,
    OSError,
    asyncio.TimeoutError,
)

CONNECT_ERRORS: tuple[type[BaseException], ...] = (exc.DBAPIError, *OUTAGE_ERRORS)

# PostgreSQL errors that pass if the work is tried again (SQLSTATE classes: 08 connection,
# 40 transaction rollback such as a deadlock or a serialization failure, 53 insufficient
# resources, 57 operator intervention such as a statement timeout, 58 system error; and a
# lock or object not available). The asyncpg driver gives most of them no class of their own.
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
TRANSIENT_SQLSTATES = frozenset({"55P03", "55006"})


def _transient(error: exc.DBAPIError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None)
    if not isinstance(sqlstate, str):
        return False
    return sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES) or sqlstate in TRANSIENT_SQLSTATES


@contextmanager
def outage_as_store_unavailable(password: str | None = None) -> Iterator[None]:
    """Turn a lost connection, refused connect, locked database or a transient PostgreSQL
    error (deadlock, serialization failure, timeout, ...) into StoreUnavailable: the work is
    retried, never rejected. Its message (logged by whoever retries) carries no password."""
    try:
        yield
    except OUTAGE_ERRORS as error:
        reason = mask_text(str(error), password)
        raise StoreUnavailable(f"store unavailable: {type(error).__name__}: {reason}") from error
    except exc.DBAPIError as error:
        if error.connection_invalidated:
            raise StoreUnavailable(
                f"store connection lost: {mask_text(str(error), password)}"
            ) from error
        if _transient(error):
            raise StoreUnavailable(
                f"store busy: {type(error).__name__}: {mask_text(str(error), password)}"
            ) from error
        raise


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed alert survives power loss, not only a process crash.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _url(settings: StoreSettings) -> URL:
    try:
        return make_url(settings.url)
    except (exc.ArgumentError, ValueError):
        # not chained: the parser's message may quote the URL, password and all
        raise ConfigError("store.url", settings.url, "not a database URL") from None


def sqlite_file(settings: StoreSettings, data_dir: Path) -> Path | None:
    """The file of a SQLite store (a relative path is under `data_dir`); None for another
    database or one in memory."""
    url = _url(settings)
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return data_dir / database


def require_existing_file(settings: StoreSettings, data_dir: Path) -> None:
    """SchemaOutOfDate if the store is a SQLite file that is not there: only `migrate` makes
    one, so a command never leaves an empty database behind."""
    path = sqlite_file(settings, data_dir)
    if path is not None and not path.is_file():
        raise SchemaOutOfDate(f"no database at {path}: run `dissemination migrate`")


def create_engine(settings: StoreSettings, data_dir: Path) -> AsyncEngine:
    """An async engine for the configured URL; relative SQLite paths live under `data_dir`.
    Statement parameters (addresses, message content) never appear in error messages, and so
    never in logs."""
    url = _url(settings)
    if url.get_backend_name() == "sqlite":
        path = sqlite_file(settings, data_dir)
        if path is not None and not Path(url.database or "").is_absolute():
            data_dir.mkdir(parents=True, exist_ok=True)
            url = url.set(database=str(path))
        engine = create_async_engine(url, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if settings.password:
        url = url.set(password=settings.password)
    engine = create_async_engine(
        url,
        pool_size=settings.pool_size,
        pool_timeout=10,
        # The connection returned last goes out first: each connection prepares every
        # statement it runs once, so work that does not need them all keeps to the few that
        # have. Handed out in turn, the first 1,000-row fan-out after a start prepared its
        # settle on every connection of the pool and finished about 80 ms later (of 0.5 s).
        pool_use_lifo=True,
        hide_parameters=True,
    )
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_SECONDS = 2.0
"""A pooled PostgreSQL connection that has been idle longer than this is pinged before it is
handed out, and replaced if the server has closed it meanwhile (a restart, a failover, an idle
timeout), so the work it was taken for never sees the closed one. A connection in steady use
is not: pinging at every checkout is a round trip and cost about a quarter of a small
transaction's CPU (250 of 800-1,000 µs). One closed while in use fails that work as an outage
(`StoreUnavailable`, retried) and takes the pool's other connections with it."""


_RETURNED_AT = "returned_at"


def _ping_when_idle(engine: AsyncEngine) -> None:
    dialect = engine.dialect

    def returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    def taken(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None or time.monotonic() - returned_at <= PING_AFTER_IDLE_SECONDS:
            return  # new, or in steady use
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError() from error  # the pool connects afresh
            raise

    event.listen(engine.sync_engine, "checkin", returned)
    event.listen(engine.sync_engine, "checkout", taken)


_PLAN_AT_EACH_EXECUTION = text("SET LOCAL plan_cache_mode = force_custom_plan")


async def plan_for_current_sizes(conn: AsyncConnection) -> None:
    """Have the rest of this transaction's statements planned at each execution, for the
    tables as they are now (PostgreSQL; nothing on SQLite), not with a plan cached earlier.

    After a few executions PostgreSQL may keep one plan for a prepared statement whatever its
    parameters, and keeps it until the table's statistics change. One kept while `deliveries`
    was small reads the whole table for every claim and settle (by id: a sequential scan is
    cheapest on a few pages), and the table can grow by a whole fan-out before autovacuum
    analyzes it. Measured (`bench.ledger --stale-plans 8`, 10,000 targets), PostgreSQL's CPU a
    row: the claim 206-247 µs and the settle 1,539-1,605 with the kept plans, 35-45 and 41-45
    planned afresh. The price is a statement a transaction and the planning: on alerts of 10
    rows the claim took less wall time for it (PostgreSQL no longer read the growing table),
    a 10,000-row fan-out's settles up to 8 % more."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_PLAN_AT_EACH_EXECUTION)


@functools.cache
def insert_ignoring_conflicts(dialect: str, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in `dialect` ("postgresql" or "sqlite"); one statement
    per table, run with the rows as parameters (building it again for every write cost as much
    CPU as running it)."""
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return dialect_insert(table).on_conflict_do_nothing()


class Database:
    """An engine plus the dialect-aware helpers that the record modules share."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._password = engine.url.password  # masked out of every error message

    @classmethod
    def from_settings(cls, settings: StoreSettings, data_dir: Path) -> Database:
        return cls(create_engine(settings, data_dir))

    async def close(self) -> None:
        await self.engine.dispose()

    async def _connect(self) -> AsyncConnection:
        """A started connection. Any driver error while connecting (refused, database closed
        to connections, too many clients) is an outage, whatever class the driver gives it."""
        connection = self.engine.connect()
        try:
            await connection.start()
        except CONNECT_ERRORS as error:
            reason = mask_text(str(error), self._password)
            raise StoreUnavailable(f"cannot connect to the store: {reason}") from error
        return connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; outages surface as StoreUnavailable, after rollback."""
        connection = await self._connect()
        try:
            with outage_as_store_unavailable(self._password):
                async with connection.begin():
                    yield connection
        finally:
            await connection.close()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        connection = await self._connect()
        try:
            with outage_as_store_unavailable(self._password):
                yield connection
        finally:
            await connection.close()

    def insert_ignoring_conflicts(self, table: Table) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING in this database's dialect."""
        return insert_ignoring_conflicts(self.dialect, table)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless a trivial query succeeds."""
        async with self.reading() as connection:
            await connection.execute(text("SELECT 1"))

    async def migrate(self, revision: str = "head") -> str:
        """Apply every pending migration up to `revision` (all of them by default); return
        the schema revision now in force."""
        async with self.transaction() as connection:
            await connection.run_sync(_upgrade_to, revision)
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return str(result.scalar_one())

    async def revision(self) -> str | None:
        """The schema revision in force, or None for an empty database."""
        async with self.reading() as connection:
            has_table = await connection.run_sync(
                lambda sync: sync.dialect.has_table(sync, "alembic_version")
            )
            if not has_table:
                return None
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return result.scalar_one_or_none()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "dissemination.store:migrations")
    return config


def migration_scripts() -> ScriptDirectory:
    """The migrations shipped with this version of the code."""
    return ScriptDirectory.from_config(_alembic_config())


@functools.cache  # the scripts ship with the code: parsing them once a process is enough
def head_revision() -> str:
    """The newest migration shipped with this version of the code."""
    head = migration_scripts().get_current_head()
    assert head is not None
    return head


def _upgrade_to(connection: Connection, revision: str) -> None:
    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
