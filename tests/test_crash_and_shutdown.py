"""The service as a real process: kill -9 between store and ack and before a batch commits,
SIGTERM with messages in flight, and a clear message when RabbitMQ is unreachable. Nothing
lost, nothing doubled."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractChannel

from dissemination.ledger.alerts import Ledger
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from testbed.alerts import cap_json_bytes
from tests.brokerutil import (  # noqa: F401 - fixture
    intake_channel_fixture,
    publish,
    queue_depth,
    wait_until,
)
from tests.serviceproc import ServiceProcess, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
async def ledger(settings: Settings) -> AsyncIterator[Ledger]:
    database = Database.from_settings(settings.store, settings.data_path)
    yield Ledger(database)
    await database.close()


async def _alerts(ledger: Ledger) -> int:
    return (await ledger.counts())["alerts"]


async def test_kill_9_between_store_and_ack_loses_and_doubles_nothing(
    service_env: dict[str, str], settings: Settings, channel: AbstractChannel, ledger: Ledger
) -> None:
    total = 20
    for i in range(total):
        await publish(channel, settings, cap_json_bytes(f"KILL-{i}"))
    env = {
        **service_env,
        "DISSEMINATION_BROKER_PREFETCH": "1",
        "DISSEMINATION_BROKER_CONCURRENCY": "1",
    }
    doomed = await ServiceProcess.start(env, failpoints="after_store=kill", wait_ready=False)
    assert await doomed.wait_exit() == -signal.SIGKILL
    stored_before_restart = await _alerts(ledger)
    assert stored_before_restart == 1
    # The alert is committed but its message was never acked: the broker requeues it.
    await wait_until(
        lambda: _depth_is(channel, settings, total), what="every message back on the queue"
    )

    restarted = await ServiceProcess.start(service_env)
    try:
        await wait_until(lambda: _count_is(ledger, total), what=f"{total} alerts stored")
        await wait_until(lambda: _queue_empty(channel, settings), what="queue drained")
    finally:
        assert await restarted.stop() == 0
    assert await ledger.counts() == {"alerts": total, "rejections": 0, "quarantine": 0}


async def test_kill_9_before_a_batch_commits_redelivers_every_message_of_it(
    service_env: dict[str, str], settings: Settings, channel: AbstractChannel, ledger: Ledger
) -> None:
    total = 12
    for i in range(total):
        await publish(channel, settings, cap_json_bytes(f"BATCH-{i}"))
    env = {
        **service_env,
        "DISSEMINATION_BROKER_PREFETCH": "32",
        "DISSEMINATION_BROKER_CONCURRENCY": "16",
    }
    # The pause lets every message reach the group commit together; the first batch to be
    # written dies before its commit.
    doomed = await ServiceProcess.start(
        env, failpoints="before_store=sleep:0.5,before_commit=kill", wait_ready=False
    )
    assert await doomed.wait_exit() == -signal.SIGKILL
    assert await _alerts(ledger) == 0  # nothing of the batch was committed
    await wait_until(
        lambda: _depth_is(channel, settings, total), what="every message back on the queue"
    )

    restarted = await ServiceProcess.start(service_env)
    try:
        await wait_until(lambda: _count_is(ledger, total), what=f"{total} alerts stored")
        await wait_until(lambda: _queue_empty(channel, settings), what="queue drained")
    finally:
        assert await restarted.stop() == 0
    assert await ledger.counts() == {"alerts": total, "rejections": 0, "quarantine": 0}


async def _depth_is(channel: AbstractChannel, settings: Settings, expected: int) -> bool:
    return await queue_depth(channel, settings.broker.inbound_queue) == expected


async def _count_is(ledger: Ledger, expected: int) -> bool:
    return await _alerts(ledger) == expected


async def _queue_empty(channel: AbstractChannel, settings: Settings) -> bool:
    return await _depth_is(channel, settings, 0)


@pytest.mark.parametrize(("grace", "outcome"), [("10", "drained"), ("0.1", "requeued")])
async def test_sigterm_with_messages_in_flight_loses_nothing(
    service_env: dict[str, str],
    settings: Settings,
    channel: AbstractChannel,
    ledger: Ledger,
    grace: str,
    outcome: str,
) -> None:
    total = 30
    for i in range(total):
        await publish(channel, settings, cap_json_bytes(f"TERM-{i}"))
    env = {
        **service_env,
        "DISSEMINATION_BROKER_PREFETCH": "10",
        "DISSEMINATION_BROKER_CONCURRENCY": "4",
        "DISSEMINATION_SERVICE_SHUTDOWN_GRACE_SECONDS": grace,
    }
    service = await ServiceProcess.start(env, failpoints="before_store=sleep:1.0")
    await wait_until(
        lambda: _fewer_ready(channel, settings, total), what="messages delivered to the service"
    )
    assert await service.stop() == 0
    stored = await _alerts(ledger)
    waiting = await queue_depth(channel, settings.broker.inbound_queue)
    # Every message is either stored (and acked) or back on the queue: none dropped.
    assert stored + waiting == total
    assert stored < total
    if outcome == "drained":
        assert stored >= 4  # the in-flight ones finished inside the grace period
    restarted = await ServiceProcess.start(service_env)
    try:
        await wait_until(lambda: _count_is(ledger, total), what=f"{total} alerts stored")
    finally:
        assert await restarted.stop() == 0
    assert await ledger.counts() == {"alerts": total, "rejections": 0, "quarantine": 0}


async def _fewer_ready(channel: AbstractChannel, settings: Settings, total: int) -> bool:
    return await queue_depth(channel, settings.broker.inbound_queue) < total


async def test_unreachable_broker_is_reported_with_how_to_start_one(
    service_env: dict[str, str],
) -> None:
    env = {
        **service_env,
        "DISSEMINATION_BROKER_URL": "amqp://127.0.0.1:1/",
        "DISSEMINATION_BROKER_CONNECT_TIMEOUT_SECONDS": "3",
    }
    code, _out, err = await run_cli(env, "run", timeout=30)
    assert code == 2
    assert "RabbitMQ is not reachable at amqp://127.0.0.1:1/" in err
    assert "rabbitmq-server -detached" in err
    assert ":guest@" not in err  # the password is never printed


async def test_run_refuses_an_unmigrated_database(
    service_env: dict[str, str], tmp_path: object
) -> None:
    env = {**service_env, "DISSEMINATION_STORE_URL": "sqlite+aiosqlite:///fresh.db"}
    code, _out, err = await run_cli(env, "run")
    assert code == 2
    assert "run `dissemination migrate`" in err
    load_settings(env)  # the settings themselves are fine
