"""The `dissemination` command as users run it: validate, migrate, publish, tokens, and a
clear start-up error for a bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.alerts import cap_xml
from tests.samples import FIXTURES_DIR
from tests.serviceproc import run_cli

pytestmark = pytest.mark.slow


async def test_validate_reports_each_file_and_fails_if_any_is_invalid(tmp_path: Path) -> None:
    good = sorted((FIXTURES_DIR / "cap" / "valid").glob("*.xml"))
    bad = FIXTURES_DIR / "cap" / "invalid" / "bad_urgency.xml"
    code, out, _err = await run_cli({}, "validate", *map(str, good))
    assert code == 0
    assert out.count(": valid: ") == len(good)
    code, out, _err = await run_cli(
        {}, "validate", str(good[0]), str(bad), str(tmp_path / "none.xml")
    )
    assert code == 1
    assert f"{bad}: invalid: schema_violation" in out
    assert "$.info[0].urgency" in out
    assert "none.xml: unreadable" in out


async def test_migrate_then_tokens_lifecycle(service_env: dict[str, str]) -> None:
    code, out, _err = await run_cli(service_env, "migrate")
    assert code == 0
    assert "database schema at revision" in out
    code, out, _err = await run_cli(
        service_env,
        "tokens",
        "create",
        "--role",
        "publisher",
        "--name",
        "nws-relay",
        "--sender",
        "w-nws.webmaster@noaa.gov",
        "--sender",
        "nws@example.gov",
    )
    assert code == 0
    assert "publishes as w-nws.webmaster@noaa.gov, nws@example.gov" in out
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("fdt_")
    code, out, _err = await run_cli(service_env, "tokens", "list")
    assert "publisher  nws-relay  live  w-nws.webmaster@noaa.gov,nws@example.gov" in out
    assert secret not in out
    assert (await run_cli(service_env, "tokens", "revoke", "nws-relay"))[0] == 0
    code, out, _err = await run_cli(service_env, "tokens", "list")
    assert "nws-relay  revoked" in out
    assert (await run_cli(service_env, "tokens", "revoke", "nws-relay"))[0] == 1


async def test_publish_exits_non_zero_unless_confirmed(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    alert = tmp_path / "alert.xml"
    alert.write_bytes(cap_xml("CLI-1"))
    # The exchange exists but nothing is bound to it yet: the broker returns the message.
    code, out, _err = await run_cli(service_env, "publish", str(alert))
    assert code == 1
    assert "NOT confirmed" in out
    code, out, _err = await run_cli(service_env, "publish", str(tmp_path / "missing.xml"))
    assert code == 1


async def test_publish_confirms_once_the_intake_queue_is_bound(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    from dissemination.broker.topology import connect, declare_intake
    from dissemination.settings import load_settings

    settings = load_settings(service_env)
    connection = await connect(settings.broker, "test")
    try:
        await declare_intake(await connection.channel(), settings.broker)
        alert = tmp_path / "alert.xml"
        alert.write_bytes(cap_xml("CLI-2"))
        code, out, _err = await run_cli(
            service_env, "publish", str(alert), "--routing-key", "cap.alert"
        )
        assert (code, out.strip()) == (0, f"{alert}: confirmed")
    finally:
        await connection.close()


async def test_a_bad_setting_names_the_key_and_value() -> None:
    code, _out, err = await run_cli({"DISSEMINATION_BROKER_PREFETCH": "lots"}, "migrate")
    assert code == 2
    assert "broker.prefetch='lots'" in err


@pytest.mark.parametrize(
    ("env", "command", "shown"),
    [
        (
            {"DISSEMINATION_STORE_URL": "postgresql+asyncpg://u:hunter2@db.example.org/ledger"},
            "migrate",
            "store.url='postgresql+asyncpg://u:***@db.example.org/ledger'",
        ),
        (
            {"DISSEMINATION_BROKER_URL": "amqp://u:hunter2@mq.example.org/alerts"},
            "publish",
            "broker.url='amqp://u:***@mq.example.org/alerts'",
        ),
        (
            {
                "DISSEMINATION_STORE_URL": "postgresql+asyncpg://u@db.example.org:port/ledger",
                "DISSEMINATION_STORE_PASSWORD": "hunter2",
            },
            "migrate",
            "store.url='postgresql+asyncpg://u@db.example.org:port/ledger'",
        ),
        (
            {
                "DISSEMINATION_BROKER_URL": "amqp://127.0.0.1:1/",
                "DISSEMINATION_BROKER_PASSWORD": "hunter2",
                "DISSEMINATION_BROKER_CONNECT_TIMEOUT_SECONDS": "5",
            },
            "publish",
            "RabbitMQ is not reachable at amqp://127.0.0.1:1/",
        ),
    ],
)
async def test_a_bad_url_setting_is_reported_without_its_password(
    tmp_path: Path, env: dict[str, str], command: str, shown: str
) -> None:
    alert = tmp_path / "alert.xml"
    alert.write_bytes(cap_xml("CLI-3"))
    args = (command, str(alert)) if command == "publish" else (command,)
    code, out, err = await run_cli(env | {"DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path)}, *args)
    assert code == 2
    assert shown in err
    assert "hunter" not in out + err
