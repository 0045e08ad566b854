"""Passwords never leave through an error: a password written into `broker.url` or
`store.url` (or any other setting) is masked in every ConfigError, with the scheme, user and
host kept so the operator still sees which URL is wrong; and the errors of a failed broker or
store connection, and what is logged meanwhile, carry neither the URL's password nor the one
from the environment."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from core.errors import ConfigError, StoreUnavailable
from dissemination.broker.topology import connect
from dissemination.errors import BrokerUnavailable
from dissemination.settings import StoreSettings, load_settings
from dissemination.store.database import Database
from testbed.ports import free_port
from tests.logcapture import LogLines

SECRET = "hunter"
"""Every password below starts with this; it must appear in no message."""


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        (
            "DISSEMINATION_STORE_URL",
            "postgresql+asyncpg://u:hunter2@db.example.org/ledger",
            "postgresql+asyncpg://u:***@db.example.org/ledger",
        ),
        (
            "DISSEMINATION_STORE_URL",
            "postgres://u:hunter2@db.example.org:5432/ledger",
            "postgres://u:***@db.example.org:5432/ledger",
        ),
        (
            "DISSEMINATION_STORE_URL",
            "postgresql+asyncpg://u:hunter%32@db.example.org/ledger",
            "postgresql+asyncpg://u:***@db.example.org/ledger",
        ),
        (
            "DISSEMINATION_STORE_URL",
            "u:hunter2@db.example.org/ledger",
            "u:***@db.example.org/ledger",
        ),
        (
            "DISSEMINATION_BROKER_URL",
            "amqp://u:hunter2@mq.example.org/alerts",
            "amqp://u:***@mq.example.org/alerts",
        ),
        (
            "DISSEMINATION_BROKER_URL",
            "amqps://u:hunter2@x/y@mq.example.org/",
            "amqps://u:***@mq.example.org/",
        ),
        (
            "DISSEMINATION_BROKER_URL",
            "http://:hunter2@mq.example.org/",
            "http://:***@mq.example.org/",
        ),
        (
            "DISSEMINATION_HTTP_PUBLIC_URL",
            "https://u:hunter2@alerts.example.org",
            "https://u:***@alerts.example.org",
        ),
        (
            "DISSEMINATION_SMS_API_BASE",
            "ftp://u:hunter2@api.example.org",
            "ftp://u:***@api.example.org",
        ),
    ],
)
def test_a_password_in_a_url_setting_is_masked(variable: str, value: str, shown: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({variable: value})
    assert SECRET not in str(error.value)
    assert SECRET not in repr(error.value.value)
    assert f"={shown!r}: " in str(error.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[broker]\nurl = "amqp://u:hunter2@mq.example.org/"\n', "broker.url"),
        ('[store]\nuri = "postgresql+asyncpg://u:hunter2@db.example.org/x"\n', "store.uri"),
        ('[broker]\npasword = "hunter2"\n', "broker.pasword"),
        ('[brokr]\nurl = "amqp://u:hunter2@mq.example.org/"\npasword = "hunter2"\n', "brokr"),
        ('store = "postgresql+asyncpg://u:hunter2@db.example.org/x"\n', "store"),
    ],
)
def test_no_password_from_a_config_file_is_echoed(tmp_path: Path, toml: str, key: str) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as error:
        load_settings({}, config)
    assert error.value.key == key
    assert SECRET not in str(error.value)
    assert SECRET not in repr(error.value.value)


def test_an_unparseable_store_url_names_the_setting_without_its_password(tmp_path: Path) -> None:
    settings = StoreSettings(
        "postgresql+asyncpg://u:hunter2@db.example.org:port/x", 1, 0.1, 0.1, "hunter3"
    )
    with pytest.raises(ConfigError) as error:
        Database.from_settings(settings, tmp_path)
    assert error.value.key == "store.url"
    assert SECRET not in str(error.value)
    assert "db.example.org" in str(error.value)


async def test_a_broker_connection_error_carries_no_password(logged: LogLines) -> None:
    logging.getLogger().setLevel(logging.DEBUG)  # the libraries' lines too
    broker = load_settings({}).broker
    closed = f"amqp://u:hunter2@127.0.0.1:{free_port()}/alerts"
    for url in (closed, "amqp://127.0.0.1:5672/"):
        settings = replace(broker, url=url, password="hunter3", connect_timeout_seconds=10)
        with pytest.raises(BrokerUnavailable) as error:
            await connect(settings, "test-secrets")
        assert SECRET not in str(error.value)
        assert "127.0.0.1" in str(error.value)
    assert not [event for event in logged.events if SECRET in json.dumps(event)]


async def test_a_store_connection_error_carries_no_password(
    tmp_path: Path, logged: LogLines
) -> None:
    logging.getLogger().setLevel(logging.DEBUG)  # the libraries' lines too
    url = f"postgresql+asyncpg://u:hunter2@127.0.0.1:{free_port()}/x"
    for password in (None, "hunter3"):
        database = Database.from_settings(StoreSettings(url, 1, 0.1, 0.1, password), tmp_path)
        try:
            with pytest.raises(StoreUnavailable) as error:
                await database.ping()
        finally:
            await database.close()
        assert SECRET not in str(error.value)
        assert str(error.value).startswith("cannot connect to the store: ")
    assert not [event for event in logged.events if SECRET in json.dumps(event)]
