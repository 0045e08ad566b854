"""Email delivery over SMTP: one multipart/alternative message (text and HTML) per ledger row.

The Message-ID is `<delivery_id@domain>`, so a retry of a row carries the same id and a
mailbox can recognise the duplicate. Alert text reaches headers only after control characters
and line breaks are collapsed, and addresses must be exactly one addr-spec, so alert content
cannot add headers or recipients.

Outcomes: accepted (250) sent; a reply of 4xx transient, 5xx permanent (for the row's own
recipient when the server refuses some recipients and accepts others); timeouts, refused or
dropped connections, TLS failures and authentication failures transient; a message that
cannot be addressed (a bad address or row id) permanent, before anything is sent. Every
delivery goes through the one relay, so all share one circuit breaker ("smtp relay").
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.email import flatten_message
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from channels.base import ChannelName, OutboundMessage, Outcome, SendResult, with_content_hash
from channels.content import AlertContent, Rendering

SUBJECT_LIMIT = 200
_ID_PART = re.compile(r"[A-Za-z0-9._-]+")
_templates = Environment(
    loader=PackageLoader("channels", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to submit mail. `cert_bundle` trusts a private CA for the relay."""

    host: str
    port: int
    security: str  # "none", "starttls" (upgrade after connecting) or "tls" (from the start)
    username: str | None
    password: str | None = field(repr=False)
    from_address: str
    pool_size: int = 8
    timeout_seconds: float = 30
    validate_certs: bool = True
    message_id_domain: str = "dissemination.local"
    cert_bundle: str | None = None

    def __post_init__(self) -> None:
        if self.security not in ("none", "starttls", "tls"):
            raise ValueError(f"unknown SMTP security {self.security!r}")


def header_text(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """`text` on one line: control characters and line breaks become single spaces, and
    anything over `limit` characters is cut at a word boundary where one is near."""
    spaced = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    line = " ".join(spaced.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if cut.rfind(" ") > limit * 3 // 4:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + "…"


def check_address(address: str) -> str:
    """`address` if it is exactly one addr-spec (no display name, no list), else ValueError."""
    if any(unicodedata.category(c) == "Cc" or c.isspace() for c in address):
        raise ValueError(f"email address contains whitespace or control characters: {address!r}")
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, HeaderParseError) as error:
        raise ValueError(f"not a single email address: {address!r}") from error
    if not parsed.username or not parsed.domain or parsed.addr_spec != address:
        raise ValueError(f"not a single email address: {address!r}")
    return address


def _compose(
    content: AlertContent, rendering: Rendering, to: str, from_address: str, message_id_domain: str
) -> EmailMessage:
    if not (_ID_PART.fullmatch(rendering.delivery_id) and _ID_PART.fullmatch(message_id_domain)):
        raise ValueError("delivery id and Message-ID domain must be letters, digits, . _ -")
    subject = f"[{content.marking}] {content.severity}: {content.event}"
    if content.headline != content.event:
        subject += f" - {content.headline}"
    if content.status_label:
        subject = f"{content.status_label} {subject}"
    message = EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = header_text(subject)
    message["From"] = check_address(from_address)
    message["To"] = check_address(to)
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<{rendering.delivery_id}@{message_id_domain}>"
    message["Auto-Submitted"] = "auto-generated"
    if content.alert_id:
        message["X-Alert-Id"] = header_text(content.alert_id)
    context: dict[str, Any] = {"alert": content, "rendering": rendering}
    message.set_content(_render("email.txt.j2", context), cte="quoted-printable")
    html = _render("email.html.j2", context)
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message


def compose(message: OutboundMessage, from_address: str, message_id_domain: str) -> EmailMessage:
    """The mail for one delivery from `from_address`; the same delivery always gets the same
    Message-ID. ValueError when it cannot be addressed."""
    return _compose(
        message.content(), message.rendering, message.address, from_address, message_id_domain
    )


def as_sent(mail: EmailMessage) -> bytes:
    """`mail` as RFC 5322 bytes, exactly as it is submitted over SMTP (CRLF line ends; SMTPUTF8
    when an address needs it)."""
    addresses = f"{mail.get('From', '')}{mail.get('To', '')}"
    return flatten_message(mail, utf8=not addresses.isascii())


def _render(name: str, context: dict[str, Any]) -> str:
    text = _templates.get_template(name).render(context)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _by_code(code: int, text: str) -> SendResult:
    outcome = Outcome.PERMANENT if 500 <= code < 600 else Outcome.TRANSIENT
    return SendResult(outcome, f"{code} {text}")


def _failure(error: Exception, recipient: str) -> SendResult:
    if isinstance(error, SMTPRecipientsRefused):
        refused = {r.recipient: r for r in error.recipients}
        one = refused.get(recipient, error.recipients[0])
        return _by_code(one.code, f"{one.message} (recipient refused)")
    # A rejected login says nothing about the row's address: it is our configuration, which
    # an operator fixes and the row's retries then go through, so it is transient, not a
    # permanent failure that would send the row to another channel.
    if isinstance(error, SMTPAuthenticationError) or (
        isinstance(error, SMTPResponseException) and error.code == 530
    ):
        detail = f"smtp authentication failed: {error.code} {error.message}"
        return SendResult(Outcome.TRANSIENT, detail)
    if isinstance(error, SMTPTimeoutError | TimeoutError):
        return SendResult(Outcome.TRANSIENT, "timed out")
    if isinstance(error, SMTPConnectError | SMTPHeloError | SMTPServerDisconnected | OSError):
        return SendResult(Outcome.TRANSIENT, f"connection failed: {type(error).__name__}: {error}")
    if isinstance(error, SMTPResponseException):
        return _by_code(error.code, error.message)
    if isinstance(error, ValueError | SMTPNotSupported):
        return SendResult(Outcome.PERMANENT, f"unsendable: {error}")
    return SendResult(Outcome.TRANSIENT, f"smtp error: {type(error).__name__}: {error}")


class EmailChannel:
    """Composes each delivery's multipart message and sends it over a pool of up to
    `pool_size` reused SMTP connections to the configured relay."""

    name = ChannelName.EMAIL.value
    relay = "smtp relay"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        # One entry per pool slot: an idle connected client, or None (connect when taken).
        # Last in, first out: the warmest connection is reused and extra ones go idle.
        self._pool: asyncio.Queue[aiosmtplib.SMTP | None] = asyncio.LifoQueue()
        for _ in range(config.pool_size):
            self._pool.put_nowait(None)

    def _client(self) -> aiosmtplib.SMTP:
        c = self.config
        return aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            timeout=c.timeout_seconds,
            use_tls=c.security == "tls",
            start_tls=c.security == "starttls",
            validate_certs=c.validate_certs,
            cert_bundle=c.cert_bundle,
        )

    def host(self, message: OutboundMessage) -> str:
        return self.relay

    def compose(self, message: OutboundMessage) -> EmailMessage:
        """The mail for one delivery, from the configured sender; the same delivery always
        gets the same Message-ID. ValueError when it cannot be addressed."""
        return compose(message, self.config.from_address, self.config.message_id_domain)

    async def send(self, message: OutboundMessage) -> SendResult:
        """Compose and submit; the result carries the hash of the mail when it was sent."""
        try:
            mail = self.compose(message)
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot address the message: {error}")
        result = await self.submit(mail)
        if result.outcome is not Outcome.SENT:
            return result
        return with_content_hash(result, mail.as_bytes())

    async def submit(self, message: EmailMessage) -> SendResult:
        """Send a composed mail and classify the relay's answer for its `To` recipient."""
        recipient = email.utils.parseaddr(str(message.get("To", "")))[1]
        client = await self._pool.get()
        try:
            if client is not None and client.is_connected:
                try:
                    return self._accepted(message, recipient, await client.send_message(message))
                except SMTPServerDisconnected:
                    pass  # closed by the server while idle: once more, on a fresh connection
            client = self._client()
            await client.connect()
            return self._accepted(message, recipient, await client.send_message(message))
        except (SMTPRecipientsRefused, SMTPResponseException) as error:
            return _failure(error, recipient)  # a reply; aiosmtplib reset the session (RSET)
        except BaseException as error:
            if client is not None:
                client.close()  # broken, or in an unknown state: never reused
            if isinstance(error, SMTPException | OSError | ValueError):
                return _failure(error, recipient)
            raise
        finally:
            self._pool.put_nowait(client if client is not None and client.is_connected else None)

    @staticmethod
    def _accepted(
        message: EmailMessage, recipient: str, result: tuple[dict[str, SMTPResponse], str]
    ) -> SendResult:
        refused, response = result
        if recipient in refused:  # others on the message were accepted, this row's was not
            return _by_code(refused[recipient].code, refused[recipient].message)
        return SendResult(Outcome.SENT, f"250 {response}", provider_id=str(message["Message-ID"]))

    async def close(self) -> None:
        """QUIT every idle connection; the channel reconnects if it is used again."""
        idle = [self._pool.get_nowait() for _ in range(self._pool.qsize())]
        for client in idle:
            self._pool.put_nowait(None)
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except (SMTPException, OSError):
                    client.close()
