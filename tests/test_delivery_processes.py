"""Delivery across real `dissemination run` processes sharing one broker and one database:
two `--only webhook` workers share one fan-out without sending any row twice, and a service
killed with SIGKILL in the middle of a fan-out of 5,000 loses nothing after a restart, its
duplicates confined to the rows the resend-once policy flagged; and one killed in the middle
of an escalation policy neither skips nor repeats a step."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import func, select

from dissemination.directory.store import ESCALATION, Directory
from dissemination.settings import Settings
from dissemination.store.database import Database
from dissemination.store.rows import RowOrigin
from dissemination.store.tables import deliveries, escalations
from testbed.alerts import cap_json_bytes
from testbed.directory import ACTOR, enrol_many
from tests.brokerutil import intake_channel_fixture, publish, wait_until  # noqa: F401 - fixture
from tests.deliveryrig import (  # noqa: F401 - fixture
    CountingReceiver,
    all_settled,
    counting_receiver_fixture,
    row_states,
)
from tests.serviceproc import ServiceProcess, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
async def database(service_env: dict[str, str], settings: Settings) -> AsyncIterator[Database]:
    code, _out, err = await run_cli(service_env, "migrate")
    assert code == 0, err
    database = Database.from_settings(settings.store, settings.data_path)
    yield database
    await database.close()


def sent_by(process: ServiceProcess) -> int:
    """Rows this process reported sent, from its per-task log lines."""
    return sum(int(e.get("sent", 0)) for e in process.logged("task_done", channel="webhook"))


async def test_two_worker_processes_share_one_fan_out_and_send_no_row_twice(
    store_kind: str,
    service_env: dict[str, str],
    settings: Settings,
    database: Database,
    channel: AbstractChannel,
    receiver: CountingReceiver,
    tmp_path: Path,
) -> None:
    if store_kind == "sqlite":
        pytest.skip("several processes share a PostgreSQL store; SQLite is the one-process default")
    total = 1000
    await enrol_many(database, total, "webhook", lambda n: f"{receiver.base}{n}")
    env = service_env | {"DISSEMINATION_BROKER_TASK_BATCH_SIZE": "25"}
    intake = await ServiceProcess.start(env | {"DISSEMINATION_DELIVERY_CHANNELS": ""})
    workers = [
        await ServiceProcess.start(env, args=("--only", "webhook"), log_path=tmp_path / f"w{i}.log")
        for i in (1, 2)
    ]
    try:
        await publish(channel, settings, cap_json_bytes("FANOUT-SHARED"))
        await wait_until(lambda: all_settled(database, total), timeout=120, what="every row")
    finally:
        for process in (intake, *workers):
            assert await process.stop() == 0
    assert await row_states(database) == Counter({"sent": total})
    assert receiver.distinct == total
    assert max(receiver.received.values()) == 1  # no row was sent twice
    shares = [sent_by(w) for w in workers]
    assert all(share > 0 for share in shares), shares  # both took part
    assert sum(shares) == total


async def test_kill_9_mid_fan_out_of_5000_loses_nothing_and_duplicates_only_flagged_rows(
    service_env: dict[str, str],
    settings: Settings,
    database: Database,
    channel: AbstractChannel,
    receiver: CountingReceiver,
    tmp_path: Path,
) -> None:
    total = 5000
    await enrol_many(database, total, "webhook", lambda n: f"{receiver.base}{n}")
    doomed = await ServiceProcess.start(service_env, log_path=tmp_path / "doomed.log")
    await publish(channel, settings, cap_json_bytes("FANOUT-KILL"))

    async def midway() -> bool:
        return receiver.distinct >= total // 4

    await wait_until(midway, timeout=120, what="a quarter of the fan-out")
    doomed.process.send_signal(signal.SIGKILL)
    assert await doomed.wait_exit() == -signal.SIGKILL
    at_kill = receiver.distinct
    stuck = (await row_states(database))["sending"]
    # The restarted service treats rows in `sending` for over 2 s as stuck.
    restarted = await ServiceProcess.start(
        service_env | {"DISSEMINATION_BROKER_STUCK_AFTER_SECONDS": "2"},
        log_path=tmp_path / "restarted.log",
    )
    try:
        await wait_until(lambda: all_settled(database, total), timeout=180, what="every row")
    finally:
        assert await restarted.stop() == 0
    assert await row_states(database) == Counter({"sent": total})  # none lost, none failed
    assert receiver.distinct == total
    duplicated = {row_id for row_id, n in receiver.received.items() if n > 1}
    async with database.reading() as conn:
        flagged = set(await conn.scalars(select(deliveries.c.id).where(deliveries.c.resent)))
    assert duplicated <= flagged  # every duplicate is a row the policy resent, and flagged
    assert len(flagged) <= stuck
    print(
        f"\nkill -9 mid fan-out: {at_kill} of {total} received at the kill, {stuck} rows in "
        f"sending, {len(flagged)} resent (flagged), {len(duplicated)} duplicates received"
    )


def steps_fired(*processes: ServiceProcess) -> Counter[int]:
    """Escalation steps fired, by step number, from the processes' logs (as far as a killed
    process's log got)."""
    return Counter(
        int(e["step"]) for process in processes for e in process.logged("escalation_step_fired")
    )


async def test_kill_9_mid_escalation_neither_skips_nor_repeats_a_step(
    service_env: dict[str, str],
    settings: Settings,
    database: Database,
    channel: AbstractChannel,
    receiver: CountingReceiver,
    tmp_path: Path,
) -> None:
    members, steps = 40, 3
    record, _ = await Directory(database).create(
        ESCALATION,
        {
            "name": "resend thrice",
            "steps": [{"afterSeconds": 2 * n, "action": "resend"} for n in range(1, steps + 1)],
        },
        ACTOR,
        datetime.now(UTC),
    )
    await enrol_many(
        database, members, "webhook", lambda n: f"{receiver.base}{n}", escalation_id=record["id"]
    )
    env = service_env | {
        "DISSEMINATION_ESCALATION_POLL_SECONDS": "0.1",
        "DISSEMINATION_BROKER_STUCK_AFTER_SECONDS": "2",
    }
    doomed = await ServiceProcess.start(env, log_path=tmp_path / "doomed.log")
    await publish(channel, settings, cap_json_bytes("ESCALATE-KILL"))
    await doomed.wait_logged("escalation_step_fired", timeout=60, step=2)
    doomed.process.send_signal(signal.SIGKILL)
    assert await doomed.wait_exit() == -signal.SIGKILL
    before = steps_fired(doomed)
    restarted = await ServiceProcess.start(env, log_path=tmp_path / "restarted.log")

    async def finished() -> bool:
        async with database.reading() as conn:
            done = await conn.scalar(select(func.count()).where(escalations.c.state == "done"))
        return done == members and await all_settled(database, members * (steps + 1))

    try:
        await wait_until(finished, timeout=120, what="every escalation to finish")
    finally:
        assert await restarted.stop() == 0
    # Each member's resends, from the store: the doomed process's log may end before the
    # lines of a step it had already committed (the kill comes as the first one appears).
    async with database.reading() as conn:
        resends = Counter(
            await conn.scalars(
                select(deliveries.c.stakeholder_id).where(
                    deliveries.c.origin == RowOrigin.ESCALATION.value
                )
            )
        )
    assert len(resends) == members
    assert set(resends.values()) == {steps}  # no step skipped, none repeated
    fired = steps_fired(doomed, restarted)
    assert all(count <= members for count in fired.values()), (before, fired)  # none twice
    assert await row_states(database) == Counter({"sent": members * (steps + 1)})
    assert receiver.distinct == members * (steps + 1)  # every step reached every member
    print(
        f"\nkill -9 mid escalation: steps fired before the kill {dict(before)}, "
        f"in all {dict(fired)}"
    )


async def test_a_task_that_fails_with_a_bug_is_dropped_and_its_rows_still_go_out(
    service_env: dict[str, str],
    settings: Settings,
    database: Database,
    channel: AbstractChannel,
    receiver: CountingReceiver,
    tmp_path: Path,
) -> None:
    """A task whose handling raises something other than an outage (here a failpoint before
    the claim, once) is logged and rejected, never left holding a prefetch slot; the sweep
    republishes its pending rows, which are then sent once, even though the first periodic
    sweep fails (a failpoint too): it is logged and the sweeper carries on."""
    await enrol_many(database, 3, "webhook", lambda n: f"{receiver.base}{n}")
    env = service_env | {"DISSEMINATION_BROKER_STUCK_AFTER_SECONDS": "1"}
    service = await ServiceProcess.start(
        env,
        # and the first periodic sweep fails too: the sweeper carries on to the next
        failpoints="before_claim=raise:1,periodic_sweep=raise:1",
        log_path=tmp_path / "service.log",
    )
    try:
        await publish(channel, settings, cap_json_bytes("TASK-BUG"))
        await wait_until(lambda: all_settled(database, 3), timeout=60, what="every row")
    finally:
        assert await service.stop() == 0
    assert await row_states(database) == Counter({"sent": 3})
    assert max(receiver.received.values()) == 1
    [failed] = service.logged("task_failed", channel="webhook")
    assert failed["level"] == "error"
    assert "FailpointError" in failed["exception"]
    assert service.logged("lost_tasks_republished", channel="webhook", count=3)
    [sweep_failed] = service.logged("sweep_failed")  # one sweeper, whichever came first
    assert "FailpointError" in sweep_failed["exception"]
