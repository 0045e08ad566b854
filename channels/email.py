"""Email delivery over SMTP: one multipart/alternative message (text and HTML) per ledger row.

The Message-ID is `<delivery_id@domain>`, so a retry of a row carries the same id and a
mailbox can recognise the duplicate. Alert text reaches headers only after control characters
and line breaks are collapsed and any encoded word ("=?") is defused (`mailtext.header_text`),
every header is checked to break its line only to continue it, and addresses must be exactly
one addr-spec, so alert content cannot add headers or recipients.

Outcomes: accepted (250) sent; a reply of 4xx transient, 5xx permanent (for the row's own
recipient when the server refuses some recipients and accepts others); timeouts, refused or
dropped connections, TLS failures and authentication failures transient; a message that
cannot be addressed (a bad address or row id) or would have a header break out of its line
permanent, before anything is sent. Every delivery goes through the one relay, so all share
one circuit breaker ("smtp relay").

A mail to a plain ASCII address is written straight to bytes (`emailwire`), the same bytes
the `email` package composes here; one to an international address (a domain or a local
part beyond ASCII) is composed here and sent with SMTPUTF8. Either way the record's hash is
of the bytes the relay received.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage

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

from channels.base import ChannelName, OutboundMessage, Outcome, SendResult, with_content_hash
from channels.content import AlertContent, Rendering
from channels.emailwire import new_boundary, wire_mail
from channels.mailtext import (
    check_address,
    check_folded,
    header_text,
    message_id,
    rendered_bodies,
    subject,
)

Transmit = Callable[[aiosmtplib.SMTP], Awaitable[tuple[dict[str, SMTPResponse], str]]]
"""One submission over a connected client, answering as aiosmtplib's `sendmail` does."""


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


def compose_content(
    content: AlertContent, rendering: Rendering, to: str, from_address: str, message_id_domain: str
) -> EmailMessage:
    """The mail showing `content` to `to`, composed by the `email` package from freshly
    rendered templates (the reference that `emailwire` writes the same bytes as). ValueError
    when it cannot be addressed, or a header would break out of its line (`check_folded`)."""
    mail_id = message_id(rendering.delivery_id, message_id_domain)
    message = EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = header_text(subject(content))
    message["From"] = check_address(from_address)
    message["To"] = check_address(to)
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    message["Message-ID"] = mail_id
    message["Auto-Submitted"] = "auto-generated"
    if content.alert_id:
        message["X-Alert-Id"] = header_text(content.alert_id)
    text, html = rendered_bodies(content, rendering)
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    # Chosen now, not when written: aiosmtplib writes a copy, and a boundary chosen then would
    # differ from the one in any other writing of the mail (the record's hash among them).
    message.set_boundary(new_boundary())
    policy = email.policy.SMTPUTF8 if _needs_utf8(message) else email.policy.SMTP
    for name, value in message.items():  # as `as_sent` and aiosmtplib will write them
        check_folded(policy.fold(name, value))
    return message


def compose(message: OutboundMessage, from_address: str, message_id_domain: str) -> EmailMessage:
    """The mail for one delivery from `from_address`; the same delivery always gets the same
    Message-ID. ValueError when it cannot be addressed."""
    return compose_content(
        message.content(), message.rendering, message.address, from_address, message_id_domain
    )


def as_sent(mail: EmailMessage) -> bytes:
    """`mail` as RFC 5322 bytes, exactly as it is submitted over SMTP (CRLF line ends; SMTPUTF8
    when an address needs it)."""
    return flatten_message(mail, utf8=_needs_utf8(mail))


def _needs_utf8(mail: EmailMessage) -> bool:
    """True when an address of `mail` is beyond ASCII: written and sent with SMTPUTF8."""
    return not f"{mail.get('From', '')}{mail.get('To', '')}".isascii()


def build(
    message: OutboundMessage, from_address: str, message_id_domain: str
) -> bytes | EmailMessage:
    """The mail for one delivery: its bytes as submitted when its addresses are plain ASCII
    (`emailwire`), otherwise the composed message for SMTPUTF8. ValueError when it cannot be
    addressed."""
    content = message.content()
    args = (content, message.rendering, message.address, from_address, message_id_domain)
    wire = wire_mail(*args)
    return wire if wire is not None else compose_content(*args)


def mail_bytes(message: OutboundMessage, from_address: str, message_id_domain: str) -> bytes:
    """The mail for one delivery as the bytes submitted over SMTP. ValueError when it cannot
    be addressed."""
    mail = build(message, from_address, message_id_domain)
    return mail if isinstance(mail, bytes) else as_sent(mail)


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
        """Compose and submit; the result carries the hash of the mail's bytes as sent."""
        c = self.config
        try:
            mail = build(message, c.from_address, c.message_id_domain)
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot address the message: {error}")
        if isinstance(mail, EmailMessage):  # an international address: SMTPUTF8
            return with_content_hash(await self.submit(mail), as_sent(mail))
        mail_id = message_id(message.rendering.delivery_id, c.message_id_domain)
        to = message.address
        result = await self._submit(
            to, mail_id, lambda client: client.sendmail(c.from_address, [to], mail)
        )
        return with_content_hash(result, mail)

    async def submit(self, message: EmailMessage) -> SendResult:
        """Send a composed mail and classify the relay's answer for its `To` recipient."""
        recipient = email.utils.parseaddr(str(message.get("To", "")))[1]
        return await self._submit(
            recipient, str(message["Message-ID"]), lambda client: client.send_message(message)
        )

    async def _submit(self, recipient: str, mail_id: str, transmit: Transmit) -> SendResult:
        client = await self._pool.get()
        try:
            if client is not None and client.is_connected:
                try:
                    return self._accepted(mail_id, recipient, await transmit(client))
                except SMTPServerDisconnected:
                    pass  # closed by the server while idle: once more, on a fresh connection
            client = self._client()
            await client.connect()
            return self._accepted(mail_id, recipient, await transmit(client))
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
        mail_id: str, recipient: str, result: tuple[dict[str, SMTPResponse], str]
    ) -> SendResult:
        refused, response = result
        if recipient in refused:  # others on the message were accepted, this row's was not
            return _by_code(refused[recipient].code, refused[recipient].message)
        return SendResult(Outcome.SENT, f"250 {response}", provider_id=mail_id)

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
