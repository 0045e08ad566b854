"""Every example in README.md is exercised. The README is cut into its fenced blocks; each block
is claimed by exactly one check below (by its language and the `<!-- example: NAME -->` comment
before it), and a block that no check claims fails the suite, so a new example cannot go
untested. Pictures are fenced as `text` and only need to be pictures."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aio_pika
import pytest
import structlog
from aiormq.exceptions import ChannelAccessRefused

from core.validation import validator_for
from dissemination import cli
from dissemination.logs import FIRST_KEYS, formatter
from testbed.ports import free_port
from tests.serviceproc import ServiceProcess, run_cli
from tests.test_webhook_contract import check_example_body, check_verification_example

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LABEL = re.compile(r"<!--\s*example:\s*([\w-]+)\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced block of the README: its language, its text, the line it starts on, and the
    label of the `<!-- example: NAME -->` comment just before it, if any."""

    language: str
    text: str
    line: int
    label: str

    def commands(self) -> Iterator[str]:
        """The block's shell commands, one per line, without comments; `a | b` on a CLI
        synopsis line gives both alternatives."""
        for raw in self.text.splitlines():
            line = raw.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                yield line


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            language = line[3:].strip()
            end = index + 1
            while not lines[end].startswith("```"):
                end += 1
            before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            found = LABEL.search(before)
            blocks.append(
                Block(
                    language,
                    "\n".join(lines[index + 1 : end]),
                    index + 1,
                    found.group(1) if found else "",
                )
            )
            index = end
        index += 1
    return blocks


BLOCKS = readme_blocks(README.read_text("utf-8"))
Check = Callable[[Block], None]
CHECKS: dict[tuple[str, str], Check] = {}


def check(language: str, label: str = "") -> Callable[[Check], Check]:
    def register(function: Check) -> Check:
        CHECKS[(language, label)] = function
        return function

    return register


def _parses(parser: argparse.ArgumentParser, argv: list[str], where: str) -> None:
    try:
        parser.parse_args(argv)
    except SystemExit as exited:
        raise AssertionError(f"README {where}: {shlex.join(argv)!r} is not a valid command") from (
            exited
        )


def _bench_parser(module: str) -> argparse.ArgumentParser:
    parser = importlib.import_module(module)._parser
    return cast(argparse.ArgumentParser, parser())


@check("sh")
def commands_parse(block: Block) -> None:
    """A block of commands: the scripts exist and run, `dissemination ...` parses with the
    CLI's own parser, and `python -m bench.X ...` with the benchmark's."""
    where = f"line {block.line}"
    for command in block.commands():
        for alternative in command.split(" | "):
            for words in _synopsis_forms(alternative):
                _check_command(words, where)


def _synopsis_forms(synopsis: str) -> list[list[str]]:
    """A synopsis line as commands: without its `[optional]` parts, and with all of them
    (taking the first of `a|b` choices); FILE... and other placeholders stay as words."""
    optional = re.compile(r"\[([^\[\]]*)\]")
    bare = optional.sub("", synopsis)
    full = optional.sub(lambda found: re.sub(r"(\S+?)\|\S+", r"\1", found.group(1)), synopsis)
    return [[PLACEHOLDERS.get(word, word) for word in shlex.split(form)] for form in (bare, full)]


PLACEHOLDERS = {"SEQ:HASH": "12:" + "0" * 64, "T": "2026-12-06T10:00:00+00:00"}
"""Values for the synopsis' typed placeholders; the others are taken as written."""


def _check_command(words: list[str], where: str) -> None:
    if words[0].startswith("scripts/"):
        script = ROOT / words[0]
        assert os.access(script, os.X_OK), f"{where}: {words[0]} is not an executable"
    elif words[0] == "dissemination":
        _parses(cli._parser(), words[1:], where)
    elif words[0].endswith("python") and words[1] == "-m":
        _parses(_bench_parser(words[2]), words[3:], where)
    elif words[0] in {*cli.COMMANDS, "validate"}:  # `tokens list | tokens revoke ...`
        _parses(cli._parser(), words, where)
    else:
        raise AssertionError(f"{where}: no check knows the command {shlex.join(words)!r}")


@check("json", "subscription")
def subscription_validates(block: Block) -> None:
    document: Any = json.loads(block.text.replace("…", str(uuid.uuid4())))
    errors = [error.message for error in validator_for("subscription").iter_errors(document)]
    assert errors == [], errors


@check("json", "log-line")
def log_line_is_the_services_own(block: Block) -> None:
    """The log line is what the service writes for those fields, keys in the same order."""
    shown = json.loads(block.text)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json", shown["instance"]))
    logger = logging.getLogger(shown["logger"])
    logger.addHandler(handler)
    try:
        fields = {k: v for k, v in shown.items() if k not in FIRST_KEYS}
        level = logging.getLevelName(shown["level"].upper())
        structlog.stdlib.get_logger(shown["logger"]).log(level, shown["event"], **fields)
    finally:
        logger.removeHandler(handler)
    written = json.loads(stream.getvalue())
    assert list(written) == list(shown)
    assert written | {"timestamp": shown["timestamp"]} == shown


@check("json", "webhook-body")
def webhook_body_is_the_builders(block: Block) -> None:
    check_example_body(block.text)


@check("python", "webhook-verify")
def webhook_verification_runs(block: Block) -> None:
    check_verification_example(block.text)


@check("text")
def picture(block: Block) -> None:
    assert block.text.strip(), f"line {block.line}: an empty picture"


OWN_TESTS = {"broker-users", "walkthrough"}
"""Blocks with a test of their own below."""


def test_every_readme_block_is_claimed_by_a_check() -> None:
    unclaimed = [
        f"line {block.line}: ```{block.language} {block.label or '(no label)'}"
        for block in BLOCKS
        if (block.language, block.label) not in CHECKS and block.label not in OWN_TESTS
    ]
    assert unclaimed == [], "README examples no test exercises: " + "; ".join(unclaimed)


@pytest.mark.parametrize(
    "block",
    [b for b in BLOCKS if (b.language, b.label) in CHECKS],
    ids=lambda b: f"line{b.line}-{b.language}-{b.label or 'plain'}",
)
def test_readme_example(block: Block) -> None:
    CHECKS[(block.language, block.label)](block)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


async def test_the_broker_users_example_gives_the_feed_publish_rights_only() -> None:
    """The README's `rabbitmqctl` commands, run as written under names of this test's own: the
    service's user may do everything in its virtual host, the feed may only publish to
    `alerts`."""
    (block,) = [b for b in BLOCKS if b.label == "broker-users"]
    suffix = uuid.uuid4().hex[:8]
    vhost, service_user, feed_user = f"fd-readme-{suffix}", f"svc-{suffix}", f"feed-{suffix}"
    passwords = {"<service password>": uuid.uuid4().hex, "<feed password>": uuid.uuid4().hex}
    for command in block.commands():
        words = shlex.split(command)
        assert words[0] == "rabbitmqctl", command
        # the vhost and the service user share a name in the README: the argument of
        # add_vhost or of -p is the vhost, any other "dissemination" the user
        renamed = [passwords.get(word, word) for word in words[1:]]
        for position, word in enumerate(renamed):
            names_vhost = renamed[0] == "add_vhost" or renamed[position - 1] == "-p"
            if word == "dissemination":
                renamed[position] = vhost if names_vhost else service_user
            elif word == "nws-feed":
                renamed[position] = feed_user
        _rabbitmqctl(*renamed)
    try:
        service = await aio_pika.connect(
            f"amqp://{service_user}:{passwords['<service password>']}@127.0.0.1:5672/{vhost}"
        )
        async with service:
            channel = await service.channel()
            await channel.declare_exchange("alerts", aio_pika.ExchangeType.TOPIC, durable=True)
        feed = await aio_pika.connect(
            f"amqp://{feed_user}:{passwords['<feed password>']}@127.0.0.1:5672/{vhost}"
        )
        async with feed:
            channel = await feed.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("alerts", ensure=False)
            await exchange.publish(aio_pika.Message(b"{}", user_id=feed_user), routing_key="x")
            with pytest.raises(ChannelAccessRefused):
                await (await feed.channel()).declare_queue("mine", exclusive=True)
    finally:
        _rabbitmqctl("delete_vhost", vhost)
        _rabbitmqctl("delete_user", service_user)
        _rabbitmqctl("delete_user", feed_user)


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_the_walkthrough_delivers_and_acknowledges_a_first_alert(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """The "A first delivery" block, run by bash as written, from a checkout-like directory
    (the project's `.venv` and `examples/`), against `dissemination run` on the embedded
    defaults: SQLite and the outbox under `data/`."""
    for tool in ("curl", "jq"):
        assert shutil.which(tool), f"the walkthrough needs {tool} (.ci/run installs it)"
    (block,) = [b for b in BLOCKS if b.label == "walkthrough"]
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    (checkout / "examples").symlink_to(ROOT / "examples")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = service_env | {
        "DISSEMINATION_SERVICE_DATA_DIR": str(checkout / "data"),
        "DISSEMINATION_STORE_URL": "sqlite+aiosqlite:///dissemination.db",
        "DISSEMINATION_HTTP_PUBLIC_URL": api,
    }
    assert (await run_cli(env, "migrate"))[0] == 0
    service = await ServiceProcess.start(env, port=port)
    try:
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            block.text,
            cwd=checkout,
            env={**os.environ, **env, "API": api},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await service.stop()
    text = out.decode()
    assert process.returncode == 0, text
    assert "Tornado Warning for central Fairfax County" in text
    assert "acknowledged: HTTP 200" in text
    progress = json.loads(text[text.rindex("{") :])
    assert progress == {"targeted": 1, "sent": 1, "ackRequired": 1, "acknowledged": 1}
    assert len(list((checkout / "data" / "outbox" / "email").glob("*.eml"))) == 1
