"""A real SMTP server on loopback for channel tests: aiosmtpd's protocol served from the test's
own event loop (so waiting on it is plain asyncio, no threads), recording what it receives.

Recipients script the replies: an address containing a key of `rcpt_replies` is answered
with that reply at RCPT, one containing a key of `data_replies` makes DATA answer so, and
"hang" (at RCPT) or "stall" (at DATA) never answer until the sink stops. Optionally AUTH
(PLAIN/LOGIN against one username and password, allowed without TLS), STARTTLS or implicit
TLS with a certificate from `make_certificate`.
"""

from __future__ import annotations

import asyncio
import email.policy
import shutil
import ssl
import subprocess
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass(frozen=True)
class Received:
    """One accepted message: the envelope and the bytes as they arrived."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    def parsed(self) -> EmailMessage:
        message = BytesParser(policy=email.policy.default).parsebytes(self.raw)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class SmtpSink:
    """What the server has seen, and how it answers. Handler hooks are aiosmtpd's."""

    credentials: tuple[str, str] | None = None
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    quits: int = 0
    rcpt_replies: dict[str, str] = field(
        default_factory=lambda: {
            "tempfail": "451 4.3.0 try later",
            "reject": "550 5.1.1 no such user",
        }
    )
    data_replies: dict[str, str] = field(
        default_factory=lambda: {
            "datadefer": "452 4.3.1 insufficient storage",
            "datafail": "554 5.6.0 message refused",
        }
    )
    once: dict[str, str] = field(
        default_factory=lambda: {"flaky": "450 4.2.1 mailbox busy, try again"}
    )
    protocols: list[Any] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def message(self, index: int) -> Received:
        """The `index`-th message received (from 0), waiting for it if need be."""
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.messages) > index)
        return self.messages[index]

    def drop_connections(self) -> None:
        """Close every open connection from the server's side, as an idle timeout would."""
        for protocol in self.protocols:
            if protocol.transport is not None:
                protocol.transport.close()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if "hang" in address:
            await self.release.wait()
        for key in list(self.once):
            if key in address:
                return self.once.pop(key)
        for key, reply in self.rcpt_replies.items():
            if key in address:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipients = tuple(envelope.rcpt_tos)
        if any("stall" in r for r in recipients):
            await self.release.wait()
        for key, reply in self.data_replies.items():
            if any(key in r for r in recipients):
                return reply
        raw = envelope.original_content or envelope.content
        async with self.arrived:
            self.messages.append(Received(envelope.mail_from, recipients, bytes(raw)))
            self.arrived.notify_all()
        return f"250 2.0.0 Ok: queued as {len(self.messages)}"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            self.credentials is not None
            and isinstance(data, LoginPassword)
            and (data.login, data.password) == tuple(c.encode() for c in self.credentials)
        )
        return AuthResult(success=ok, handled=False)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (via the openssl command)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    request = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    names = "subjectAltName=IP:127.0.0.1,DNS:localhost"
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        ["openssl", *request.split(), "-subj", "/CN=localhost", "-addext", names, *files],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@asynccontextmanager
async def start_smtp_sink(
    *,
    credentials: tuple[str, str] | None = None,
    auth_required: bool = False,
    security: Literal["none", "starttls", "tls"] = "none",
    certificate: tuple[Path, Path] | None = None,
    smtputf8: bool = True,
) -> AsyncIterator[SmtpSink]:
    """Serve an `SmtpSink` on 127.0.0.1 (a free port) for the duration of the block;
    `smtputf8` says whether it takes international addresses (RFC 6531)."""
    sink = SmtpSink(credentials)
    context: ssl.SSLContext | None = None
    if security != "none":
        assert certificate is not None, "TLS needs make_certificate()"
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
    loop = asyncio.get_running_loop()

    def protocol() -> Any:
        sink.connections += 1
        with warnings.catch_warnings():  # "AUTH without TLS": wanted here, on loopback
            warnings.simplefilter("ignore")
            smtp = SMTP(
                sink,
                hostname="sink.test",
                tls_context=context if security == "starttls" else None,
                require_starttls=security == "starttls",
                authenticator=sink.authenticate if credentials else None,
                auth_required=auth_required,
                auth_require_tls=False,
                enable_SMTPUTF8=smtputf8,
                loop=loop,
            )
        sink.protocols.append(smtp)
        return smtp

    server = await loop.create_server(
        protocol, sink.host, 0, ssl=context if security == "tls" else None
    )
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        server.close()
        sink.release.set()
        sink.drop_connections()
        await server.wait_closed()
