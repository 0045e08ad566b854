"""Delivery into files, for a service with no SMTP relay or Twilio account: each email becomes
`<delivery id>.eml` (the RFC 5322 message exactly as SMTP would submit it) and each SMS
`<delivery id>.json` (to, sender, body, delivery id, time) in an outbox directory, so a first
delivery needs no other server.

A file is named by its ledger row, so a resend replaces it rather than adding a second one.
It is written whole or not at all (a temporary file renamed into place) and readable by its
owner only (mode 0600: it holds personal data). A failure to write (disk full, permission) is
transient, for the worker to retry; a message that cannot be composed is permanent, as on the
real transport. Each outbox is one destination, with one circuit breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

from channels.base import ChannelName, OutboundMessage, Outcome, SendResult, with_content_hash
from channels.email import mail_bytes
from channels.mailtext import message_id
from channels.sms import SmsChannel
from core.clock import Clock, utc_now

_FILE_STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class OutboxDirectory:
    """One directory of outbox files, each replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, stem: str, suffix: str, content: bytes) -> Path:
        """Write `content` to `<stem><suffix>`, replacing any earlier version whole; OSError
        when it cannot be written, ValueError when `stem` is no plain file name."""
        if not _FILE_STEM.fullmatch(stem):
            raise ValueError(f"not usable as a file name: {stem!r}")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.path / f"{stem}{suffix}"
        # mkstemp creates the file with mode 0600, and the rename keeps that mode
        handle, temporary = tempfile.mkstemp(dir=self.path, prefix=f".{stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return target

    async def deliver(self, stem: str, suffix: str, content: bytes) -> SendResult:
        """Write the file off the event loop and say what came of it."""
        try:
            path = await asyncio.to_thread(self.write, stem, suffix, content)
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot name the outbox file: {error}")
        except OSError as error:
            detail = f"cannot write to the outbox {self.path}: {type(error).__name__}: {error}"
            return SendResult(Outcome.TRANSIENT, detail)
        return with_content_hash(SendResult(Outcome.SENT, f"written to {path}"), content)


class EmailOutbox:
    """Writes each delivery's mail to `<directory>/<delivery id>.eml`."""

    name = ChannelName.EMAIL.value

    def __init__(self, directory: Path, from_address: str, message_id_domain: str) -> None:
        self.outbox = OutboxDirectory(directory)
        self.from_address = from_address
        self.message_id_domain = message_id_domain

    def host(self, message: OutboundMessage) -> str:
        return "email outbox"

    async def send(self, message: OutboundMessage) -> SendResult:
        try:
            mail = mail_bytes(message, self.from_address, self.message_id_domain)
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot address the message: {error}")
        result = await self.outbox.deliver(message.delivery_id, ".eml", mail)
        if result.outcome is not Outcome.SENT:
            return result
        return SendResult(
            Outcome.SENT,
            result.detail,
            provider_id=message_id(message.rendering.delivery_id, self.message_id_domain),
            content_sha256=result.content_sha256,
        )

    async def close(self) -> None:
        return None


class SmsOutbox:
    """Writes each delivery's text, as Twilio would have been given it, to
    `<directory>/<delivery id>.json`. `sender` is the configured number or messaging service,
    if any."""

    name = ChannelName.SMS.value

    def __init__(self, directory: Path, sender: str | None, clock: Clock = utc_now) -> None:
        self.outbox = OutboxDirectory(directory)
        self.sender = sender
        self.clock = clock

    def host(self, message: OutboundMessage) -> str:
        return "sms outbox"

    async def send(self, message: OutboundMessage) -> SendResult:
        try:
            body = SmsChannel.compose(message)
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot compose the text: {error}")
        record = {
            "to": message.address,
            "sender": self.sender,
            "body": body,
            "delivery_id": message.delivery_id,
            "time": self.clock().isoformat(),
        }
        content = (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode()
        result = await self.outbox.deliver(message.delivery_id, ".json", content)
        # the ledger's hash is of the text, as for a message sent through Twilio
        return with_content_hash(result, body.encode())

    async def close(self) -> None:
        return None
