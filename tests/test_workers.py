"""`dissemination run --workers N`: a supervisor and N service processes on one PostgreSQL
store and one broker. Both processes take deliveries of one fan-out without sending a row
twice, SIGTERM stops them all cleanly, a process killed outright is started again, a
supervisor killed outright takes its processes with it; bad counts are refused by the
parser, and more than one process on SQLite with a clear message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aio_pika.abc import AbstractChannel

from dissemination import cli
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from dissemination.supervisor import RestartBudget, cores
from dissemination.workers import process_count
from testbed.alerts import cap_json_bytes
from testbed.directory import enrol_many
from tests.brokerutil import intake_channel_fixture, publish, wait_until  # noqa: F401 - fixture
from tests.deliveryrig import (  # noqa: F401 - fixture
    CountingReceiver,
    all_settled,
    counting_receiver_fixture,
    row_states,
)
from tests.serviceproc import ServiceProcess, run_cli

PG_ONLY = "several processes share a PostgreSQL store; SQLite runs one"


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", ""])
def test_a_bad_process_count_is_a_clear_usage_error(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli._parser().parse_args(["run", "--workers", bad])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--workers: expected a whole number of processes, 1 or more" in err


def test_the_default_is_one_process_per_core_on_postgresql_and_one_on_sqlite(
    tmp_path: Path,
) -> None:
    postgres = {"DISSEMINATION_STORE_URL": "postgresql+asyncpg://postgres@127.0.0.1/x"}
    sqlite = {"DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path)}
    assert process_count(None, load_settings(postgres)) == cores()
    assert process_count(None, load_settings(sqlite)) == 1
    assert process_count(3, load_settings(postgres)) == 3
    configured = load_settings(postgres | {"DISSEMINATION_SERVICE_WORKERS": "2"})
    assert process_count(None, configured) == 2
    assert process_count(1, configured) == 1  # --workers over the setting


def test_the_supervisor_loads_none_of_the_service() -> None:
    """The process that only watches the service processes imports neither the service nor
    its drivers (`run --workers N` replaces itself with it)."""
    heavy = ("dissemination.service", "sqlalchemy", "aiohttp", "aio_pika", "jsonschema")
    probe = (
        f"import sys, dissemination.supervisor; print([m for m in {heavy!r} if m in sys.modules])"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"


def test_the_restart_backoff_doubles_up_to_its_ceiling() -> None:
    budget = RestartBudget(first_delay_seconds=0.5, max_delay_seconds=3)
    assert [budget.delay(n) for n in range(5)] == [0.5, 1, 2, 3, 3]


async def test_several_processes_on_sqlite_are_refused_with_the_reason(
    service_env: dict[str, str], store_kind: str
) -> None:
    if store_kind != "sqlite":
        pytest.skip("the SQLite refusal")
    code, _out, err = await run_cli(service_env, "run", "--workers", "2")
    assert code == 2
    assert "2 service processes need the shared PostgreSQL store" in err
    assert "--workers 1" in err


@pytest.fixture
async def database(
    store_kind: str, service_env: dict[str, str], settings: Settings
) -> AsyncIterator[Database]:
    if store_kind == "sqlite":
        pytest.skip(PG_ONLY)
    database = Database.from_settings(settings.store, settings.data_path)
    yield database
    await database.close()


async def start_group(env: dict[str, str], count: int, log: Path) -> ServiceProcess:
    """`run --workers count`, once every process has started and the lead answers HTTP."""
    group = await ServiceProcess.start(
        env, args=("--workers", str(count)), wait_ready=False, log_path=log
    )

    async def all_started() -> bool:
        if group.process.returncode is not None:
            raise AssertionError(f"the supervisor exited: {group.log()[-3000:]}")
        return len(group.logged("service_started")) >= count

    await wait_until(all_started, timeout=60, what=f"{count} service processes")
    await group.wait_ready()
    return group


def pids(group: ServiceProcess) -> dict[int, int]:
    """The current process of each index, from the supervisor's log."""
    return {int(e["index"]): int(e["pid"]) for e in group.logged("worker_started")}


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def gone(pid: int) -> bool:
    """No such process, or one that has exited and waits to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.mark.slow
async def test_two_processes_share_a_fan_out_and_stop_together_on_sigterm(
    service_env: dict[str, str],
    settings: Settings,
    database: Database,
    channel: AbstractChannel,
    receiver: CountingReceiver,
    tmp_path: Path,
) -> None:
    total = 1000
    await enrol_many(database, total, "webhook", lambda n: f"{receiver.base}{n}")
    env = service_env | {"DISSEMINATION_BROKER_TASK_BATCH_SIZE": "20"}
    group = await start_group(env, 2, tmp_path / "group.log")
    children = pids(group)
    assert "dissemination.supervisor" in command_line(group.process.pid)  # the light one
    try:
        await publish(channel, settings, cap_json_bytes("FANOUT-WORKERS"))
        await wait_until(lambda: all_settled(database, total), timeout=120, what="every row")
    finally:
        group.process.send_signal(signal.SIGTERM)
        assert await group.wait_exit() == 0, group.log()[-3000:]
    assert await row_states(database) == Counter({"sent": total})
    assert receiver.distinct == total
    assert max(receiver.received.values()) == 1  # no row sent twice
    started = group.logged("service_started")
    assert sorted(e["lead"] for e in started) == [False, True]
    sent = Counter[str]()
    for event in group.logged("task_done", channel="webhook"):
        sent[event["instance"]] += int(event.get("sent", 0))
    assert len(sent) == 2, sent
    assert min(sent.values()) > 0, sent  # both took part
    assert sum(sent.values()) == total
    exited = {int(e["index"]): int(e["status"]) for e in group.logged("worker_exited")}
    assert exited == {0: 0, 1: 0}
    assert group.logged("workers_stopped", status=0)
    assert all(gone(pid) for pid in children.values())
    assert not group.logged("worker_died")


@pytest.mark.slow
async def test_a_process_killed_outright_is_started_again(
    service_env: dict[str, str],
    settings: Settings,
    database: Database,
    channel: AbstractChannel,
    receiver: CountingReceiver,
    tmp_path: Path,
) -> None:
    await enrol_many(database, 50, "webhook", lambda n: f"{receiver.base}{n}")
    group = await start_group(service_env, 2, tmp_path / "group.log")
    try:
        victim = pids(group)[1]
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            return pids(group)[1] != victim and len(group.logged("service_started")) >= 3

        await wait_until(replaced, timeout=60, what="the killed process to be replaced")
        [died] = group.logged("worker_died", index=1)
        assert died["pid"] == victim
        assert died["status"] == -signal.SIGKILL
        assert group.logged("worker_restarting", index=1)
        await publish(channel, settings, cap_json_bytes("AFTER-RESTART"))
        await wait_until(lambda: all_settled(database, 50), timeout=60, what="every row")
    finally:
        group.process.send_signal(signal.SIGTERM)
        assert await group.wait_exit() == 0, group.log()[-3000:]
    assert receiver.distinct == 50


@pytest.mark.slow
async def test_a_supervisor_killed_outright_takes_its_processes_with_it(
    service_env: dict[str, str], database: Database, tmp_path: Path
) -> None:
    group = await start_group(service_env, 2, tmp_path / "group.log")
    children = pids(group)
    group.process.send_signal(signal.SIGKILL)
    assert await group.wait_exit() == -signal.SIGKILL

    async def all_gone() -> bool:
        return all(gone(pid) for pid in children.values())

    await wait_until(all_gone, timeout=60, what="the orphaned processes to stop")
    assert len(group.logged("service_stopped")) == 2  # they stopped, not crashed


@pytest.mark.slow
async def test_a_process_that_refuses_to_start_stops_the_group_with_its_status(
    service_env: dict[str, str], database: Database, tmp_path: Path
) -> None:
    """Exit status 2 (here: no broker) is not worth restarting: the supervisor stops and
    says so, as one process would have."""
    env = service_env | {
        "DISSEMINATION_BROKER_URL": "amqp://127.0.0.1:1/",
        "DISSEMINATION_BROKER_CONNECT_TIMEOUT_SECONDS": "1",
    }
    group = await ServiceProcess.start(
        env, args=("--workers", "2"), wait_ready=False, log_path=tmp_path / "group.log"
    )
    assert await group.wait_exit(60) == 2
    assert group.logged("worker_refused_to_start")
    assert "RabbitMQ is not reachable" in group.log()
    assert not group.logged("worker_restarting")
