"""The channels are named once, in `channels.base`: every other list of them (the directory
model, the delivery queues, the settings, the command line, the release API, the JSON
schemas, the benchmark) is that list or is checked against it here."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import rawlegs
from channels.base import CHANNEL_NAMES, ChannelName
from channels.email import EmailChannel
from channels.outbox import EmailOutbox, SmsOutbox
from channels.sms import SmsChannel, SmsOff
from channels.webhook import WebhookChannel
from core.errors import ConfigError
from dissemination.cli import _channel_list
from dissemination.settings import load_settings
from subscriptions.model import Channel

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


def test_the_one_list() -> None:
    assert CHANNEL_NAMES == ("email", "sms", "webhook")
    assert all(type(name) is str for name in CHANNEL_NAMES)
    assert Channel is ChannelName
    classes = (WebhookChannel, EmailChannel, EmailOutbox, SmsChannel, SmsOutbox, SmsOff)
    names = {c.name for c in classes}
    assert names == set(CHANNEL_NAMES)
    assert sorted(rawlegs.CHANNELS) == list(CHANNEL_NAMES)


def test_the_default_settings_deliver_every_channel_and_refuse_others() -> None:
    assert load_settings({}).delivery.channels == CHANNEL_NAMES
    with pytest.raises(ConfigError, match="unknown channel 'fax'; known: email, sms, webhook"):
        load_settings({"DISSEMINATION_DELIVERY_CHANNELS": "email,fax"})


def test_the_command_line_takes_only_known_channels() -> None:
    assert _channel_list("webhook, sms") == ("webhook", "sms")
    with pytest.raises(argparse.ArgumentTypeError, match="among email, sms, webhook"):
        _channel_list("pager")


def channel_enums(node: Any, key: str = "") -> Iterator[list[str]]:
    """Every enum under a `channel` or `channels` property of a JSON schema."""
    if isinstance(node, dict):
        for name, child in node.items():
            if name == "enum" and key in ("channel", "channels"):
                yield child
            yield from channel_enums(child, name if name not in ("items", "enum") else key)
    elif isinstance(node, list):
        for child in node:
            yield from channel_enums(child, key)


@pytest.mark.parametrize(
    ("schema", "count"),
    [
        ("contact.json", 1),
        ("subscription.json", 1),
        ("escalation.json", 1),
        ("send_request.json", 1),
        ("openapi.json", 6),
    ],
)
def test_the_schemas_list_the_same_channels(schema: str, count: int) -> None:
    document = json.loads((SCHEMAS_DIR / schema).read_text(encoding="utf-8"))
    enums = [e for e in channel_enums(document) if "email" in e]
    assert len(enums) == count
    assert all(tuple(e) == CHANNEL_NAMES for e in enums)
