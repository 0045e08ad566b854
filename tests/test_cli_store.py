"""The CLI and its store: a relative data directory means the same place wherever a command is
run from; only `migrate` creates a database, and any other command (`run` too) meets a missing,
unmigrated or outdated one with a one-line error and exit status 2; API token names are
unique, and `tokens create` prints its secret in the documented format."""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from dissemination.cli import main
from dissemination.settings import StoreSettings, load_settings, settings_base_dir
from dissemination.store.database import Database, head_revision
from dissemination.store.tables import api_tokens

CHECKOUT = Path(__file__).resolve().parent.parent
SECRET = re.compile(r"fdt_[A-Za-z0-9_-]{43}")
DB_COMMANDS = [
    ["tokens", "list"],
    ["tokens", "revoke", "someone"],
    ["tokens", "create", "--role", "admin", "--name", "ops"],
    ["audit", "head"],
    ["audit", "verify"],
    ["retention", "run", "--dry-run"],
]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The in-process CLI's environment: no settings file, and a data directory of its own."""
    for name in list(os.environ):
        if name.startswith("DISSEMINATION_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("DISSEMINATION_SERVICE_DATA_DIR", str(data))
    monkeypatch.setenv("DISSEMINATION_RECORD_KEY", "cli-record-key-" + "k" * 32)
    return data


async def cli(*args: str) -> int:
    """`dissemination *args` through `main`, on a thread of its own (it runs its own loop)."""
    return await asyncio.to_thread(main, list(args))


async def run_elsewhere(cwd: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`python -m dissemination *args` in a child process working in `cwd`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISSEMINATION_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dissemination",
        *args,
        cwd=cwd,
        env=clean | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("command", DB_COMMANDS, ids=" ".join)
async def test_without_a_database_a_command_says_to_migrate_and_creates_none(
    cli_env: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert await cli(*command) == 2
    _out, err = capsys.readouterr()
    assert err == (
        f"dissemination: no database at {cli_env / 'dissemination.db'}: "
        "run `dissemination migrate`\n"
    )
    assert not await asyncio.to_thread(cli_env.exists)  # neither a database nor its directory


async def test_run_without_a_database_says_to_migrate_and_creates_none(tmp_path: Path) -> None:
    data = tmp_path / "data"
    status, _out, err = await run_elsewhere(
        tmp_path, {"DISSEMINATION_SERVICE_DATA_DIR": str(data)}, "run"
    )
    assert status == 2, err
    assert err.endswith(
        f"dissemination: no database at {data / 'dissemination.db'}: run `dissemination migrate`\n"
    )
    assert not await asyncio.to_thread(data.exists)


async def test_an_unmigrated_store_of_either_kind_says_to_migrate(
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    empty_store_url: str,
    store_kind: str,
) -> None:
    monkeypatch.setenv("DISSEMINATION_STORE_URL", empty_store_url)
    if store_kind == "sqlite":  # a database file with nothing in it
        path = Path(empty_store_url.removeprefix("sqlite+aiosqlite:///"))
        database = Database.from_settings(StoreSettings(empty_store_url, 1, 0.05, 0.2), cli_env)
        async with database.transaction() as conn:
            await conn.execute(text("CREATE TABLE unrelated (x INTEGER)"))
        await database.close()
        assert await asyncio.to_thread(path.is_file)
    assert await cli("tokens", "list") == 2
    _out, err = capsys.readouterr()
    assert err == (
        f"dissemination: database schema is at revision none, this version needs "
        f"{head_revision()}: run `dissemination migrate`\n"
    )


async def test_a_database_behind_this_version_says_to_migrate(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings()
    database = Database.from_settings(settings.store, settings.data_path)
    await database.migrate("0016")
    await database.close()
    capsys.readouterr()
    assert await cli("audit", "head") == 2
    _out, err = capsys.readouterr()
    assert err == (
        f"dissemination: database schema is at revision 0016, this version needs "
        f"{head_revision()}: run `dissemination migrate`\n"
    )
    assert await cli("migrate") == 0
    assert await cli("audit", "head") == 0
    assert capsys.readouterr().out.endswith(f"0:{'0' * 64}\n")


async def test_token_names_are_unique_and_the_secret_has_its_documented_form(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("migrate") == 0
    capsys.readouterr()
    args = ("tokens", "create", "--role", "publisher", "--name", "relay", "--sender", "a@b.gov")
    assert await cli(*args) == 0
    out, _err = capsys.readouterr()
    first, second, secret = out.splitlines()
    assert re.fullmatch(r"token [0-9a-f-]{36} \(publisher, relay, publishes as a@b\.gov\);", first)
    assert second == "its secret, shown once:"
    assert SECRET.fullmatch(secret)
    assert await cli("tokens", "revoke", "relay") == 0
    capsys.readouterr()
    assert await cli(*args) == 2  # taken, though revoked
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "dissemination: a token named 'relay' exists already "
        "(token names are unique, revoked ones too)\n"
    )


def test_the_help_of_tokens_create_documents_the_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["tokens", "create", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "the secret alone on the last line: `fdt_` and 43 URL-safe base64 characters" in (
        help_text
    )
    assert "a taken name is refused with exit status 2" in help_text


async def test_the_migration_renames_duplicate_token_names_oldest_first(
    empty_store_url: str,
    tmp_path: Path,
) -> None:
    database = Database.from_settings(StoreSettings(empty_store_url, 5, 0.05, 0.2), tmp_path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    names = ["relay", "relay", "relay-2", "relay", "solo"]
    try:
        assert await database.migrate("0016") == "0016"
        async with database.transaction() as conn:
            for n, name in enumerate(names):
                await conn.execute(
                    api_tokens.insert().values(
                        id=f"00000000-0000-0000-0000-00000000000{n}",
                        name=name,
                        role="admin",
                        token_sha256=f"{n:064d}",
                        created_at=start + timedelta(minutes=n),
                        senders=[],
                    )
                )
        assert await database.migrate() == head_revision()
        async with database.reading() as conn:
            rows = await conn.execute(select(api_tokens.c.name).order_by(api_tokens.c.created_at))
            assert [row.name for row in rows] == ["relay", "relay-3", "relay-2", "relay-4", "solo"]
    finally:
        await database.close()


def test_a_relative_data_dir_is_relative_to_the_settings_file_or_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings_base_dir(None) == CHECKOUT
    assert load_settings({}).data_path == CHECKOUT / "data"
    config = tmp_path / "etc" / "dissemination.toml"
    config.parent.mkdir()
    config.write_text('[service]\ndata_dir = "state"\n')
    assert load_settings({}, config).data_path == tmp_path / "etc" / "state"
    by_env = load_settings({"DISSEMINATION_CONFIG": str(config)})
    assert by_env.data_path == tmp_path / "etc" / "state"
    absolute = load_settings({"DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path / "abs")}, config)
    assert absolute.data_path == tmp_path / "abs"
    # installed, not in a checkout: the working directory
    installed = tmp_path / "site-packages" / "config"
    installed.mkdir(parents=True)
    monkeypatch.setattr(importlib.resources, "files", lambda _package: installed)
    monkeypatch.chdir(tmp_path)
    assert settings_base_dir(None) == tmp_path


async def test_every_command_finds_the_same_store_from_anywhere(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "dissemination.toml"
    config.parent.mkdir()
    config.write_text('[service]\ndata_dir = "state"\n')
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    by_flag = ("--config", str(config))
    code, _out, err = await run_elsewhere(first, {}, *by_flag, "tokens", "list")
    assert (code, err.strip().splitlines()[-1]) == (
        2,
        f"dissemination: no database at {tmp_path / 'etc' / 'state' / 'dissemination.db'}: "
        "run `dissemination migrate`",
    )
    assert "Traceback" not in err
    assert (await run_elsewhere(first, {}, *by_flag, "migrate"))[0] == 0
    by_env = {"DISSEMINATION_CONFIG": str(config)}
    code, out, _err = await run_elsewhere(
        second, by_env, "tokens", "create", "--role", "viewer", "--name", "desk"
    )
    assert code == 0
    assert SECRET.fullmatch(out.splitlines()[-1])
    code, out, _err = await run_elsewhere(first, {}, *by_flag, "tokens", "list")
    assert (code, out.split()[1:4]) == (0, ["viewer", "desk", "live"])
    assert (tmp_path / "etc" / "state" / "dissemination.db").is_file()
    assert list(first.iterdir()) == list(second.iterdir()) == []
