"""The email channel against a real SMTP server on loopback (testbed/smtp.py): messages
parsed back with the `email` package, header injection, the reply table, timeouts, AUTH,
STARTTLS and implicit TLS, and the connection pool."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

import pytest

from channels.base import OutboundMessage, Outcome
from channels.content import Rendering
from channels.email import EmailChannel, SmtpConfig, mail_bytes
from testbed.smtp import SmtpSink, make_certificate, start_smtp_sink
from tests.emailrig import DOMAIN, FROM, TO, UNUSED_RELAY, config, message


def compose(outbound: OutboundMessage, from_address: str = FROM) -> EmailMessage:
    return EmailChannel(dataclasses.replace(UNUSED_RELAY, from_address=from_address)).compose(
        outbound
    )


def subject(parsed: EmailMessage) -> str:
    """The Subject as a mail reader shows it. (The stdlib folds a value that fits one line
    but not after "Subject: " onto the next line; the parser keeps that folding space.)"""
    return str(parsed["Subject"]).strip()


def body(parsed: EmailMessage, subtype: str) -> str:
    part = parsed.get_body((subtype,))
    assert part is not None
    return str(part.get_content())


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with start_smtp_sink() as running:
        yield running


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    return make_certificate(tmp_path_factory.mktemp("tls"))


async def test_a_message_arrives_as_text_and_html_with_the_marking(sink: SmtpSink) -> None:
    rendering = Rendering(
        "row-1", ack_url="https://ack.example/a?t=1&u=2", portal_url="https://portal.example/1"
    )
    channel = EmailChannel(config(sink))
    try:
        result = await channel.send(message(rendering=rendering))
    finally:
        await channel.close()
    assert result.outcome is Outcome.SENT
    assert result.content_sha256 is not None
    assert len(result.content_sha256) == 64
    received = await sink.message(0)
    assert (received.mail_from, received.rcpt_tos) == (FROM, (TO,))
    parsed = received.parsed()
    assert parsed.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in parsed.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert subject(parsed) == (
        "[TLP:AMBER LES] Severe: Flash Flood Warning - Flash flooding along Example Creek"
    )
    assert (parsed["From"], parsed["To"]) == (FROM, TO)
    assert parsed["Message-ID"] == "<row-1@dissemination.local>"
    assert parsed["X-Alert-Id"] == "urn:example:alert:1"
    assert parsed["Date"].datetime is not None
    for text in (body(parsed, "plain"), body(parsed, "html")):
        assert (
            "This alert is marked TLP:AMBER LES. The marking governs any further sharing." in text
        )
        for expected in (
            "Flash flooding along Example Creek",
            "Flash Flood Warning",
            "Severe",
            "Immediate",
            "Observed",
            "Example Fusion Center",
            "2026-11-24T10:00:00-05:00",
            "Example County; Sample Township",
            "Stay away from the creek.",
            "Move to higher ground now.",
            "https://portal.example/1",
        ):
            assert expected in text
    plain, html = body(parsed, "plain"), body(parsed, "html")
    assert plain.splitlines()[0] == "TLP:AMBER LES"  # the marking first and last
    assert plain.rstrip().splitlines()[-1] == "TLP:AMBER LES"
    assert html.index("TLP:AMBER LES") < html.index("<h1")
    assert html.rstrip().splitlines()[-3].endswith(">TLP:AMBER LES</p>")
    assert "Acknowledge: https://ack.example/a?t=1&u=2" in plain
    assert 'href="https://ack.example/a?t=1&amp;u=2"' in html


async def test_without_links_the_bodies_leave_them_out(sink: SmtpSink) -> None:
    channel = EmailChannel(config(sink))
    try:
        assert (await channel.send(message())).outcome is Outcome.SENT
    finally:
        await channel.close()
    parsed = (await sink.message(0)).parsed()
    for subtype in ("plain", "html"):
        assert "Acknowledge" not in body(parsed, subtype)
        assert "Full alert" not in body(parsed, subtype)


async def test_a_retry_of_the_row_carries_the_same_message_id(sink: SmtpSink) -> None:
    channel = EmailChannel(config(sink))
    try:
        first = await channel.send(message(delivery_id="7f3c0c2e-row"))
        retry = await channel.send(message(delivery_id="7f3c0c2e-row"))
    finally:
        await channel.close()
    ids = [(await sink.message(i)).parsed()["Message-ID"] for i in (0, 1)]
    assert ids == ["<7f3c0c2e-row@dissemination.local>"] * 2
    assert first.provider_id == retry.provider_id == ids[0]
    assert first.detail == "250 2.0.0 Ok: queued as 1"


async def test_alert_text_is_escaped_in_html(sink: SmtpSink) -> None:
    channel = EmailChannel(config(sink))
    try:
        await channel.send(message(description="<script>alert('x')</script> & <b>bold</b>"))
    finally:
        await channel.close()
    parsed = (await sink.message(0)).parsed()
    html = body(parsed, "html")
    assert "<script>" not in html
    assert "<b>bold" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold" in html
    assert "<script>alert('x')</script> & <b>bold</b>" in body(parsed, "plain")


@pytest.mark.parametrize(
    "headline",
    [
        "Flood\r\nBcc: victim@example.net\r\nX-Injected: yes",
        "Flood\nBcc: victim@example.net",
        "Flood\rBcc: victim@example.net",
        "Flood\u2028Bcc: victim@example.net\x00\x1b[31m",
        "Flood\r\n\r\n<html>not a body</html>",
    ],
)
async def test_line_breaks_in_alert_text_cannot_make_headers(sink: SmtpSink, headline: str) -> None:
    channel = EmailChannel(config(sink))
    try:
        result = await channel.send(message(headline=headline, event="Flood\r\nX-Event: 1"))
    finally:
        await channel.close()
    assert result.outcome is Outcome.SENT
    received = await sink.message(0)
    assert received.rcpt_tos == (TO,)
    parsed = received.parsed()
    assert {"Bcc", "X-Injected", "X-Event"}.isdisjoint(parsed.keys())
    shown = subject(parsed)
    assert shown.startswith("[TLP:AMBER LES] Severe: Flood X-Event: 1 - Flood")
    assert not any(c in shown for c in "\r\n\x00\x1b\u2028")
    assert parsed.get_content_type() == "multipart/alternative"


async def test_a_long_subject_is_cut_at_a_word_boundary(sink: SmtpSink) -> None:
    channel = EmailChannel(config(sink))
    try:
        await channel.send(message(headline="Rising water " * 40))
    finally:
        await channel.close()
    raw = (await sink.message(0)).raw
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    shown = subject((await sink.message(0)).parsed())
    assert len(shown) <= 200
    assert shown.endswith(("water…", "Rising…"))


async def test_non_ascii_alert_text_is_encoded(sink: SmtpSink) -> None:
    channel = EmailChannel(config(sink))
    try:
        result = await channel.send(message(headline="Überschwemmung in Köln — évacuez"))
    finally:
        await channel.close()
    assert result.outcome is Outcome.SENT
    received = await sink.message(0)
    received.raw.decode("ascii")  # headers as encoded words, bodies quoted-printable
    assert subject(received.parsed()).endswith("Überschwemmung in Köln — évacuez")
    assert "Überschwemmung in Köln" in body(received.parsed(), "plain")


@pytest.mark.parametrize(
    "address",
    [
        "analyst@example.org\r\nBcc: victim@example.net",
        "analyst@example.org\nBcc: victim@example.net",
        "Analyst <analyst@example.org>",
        "analyst@example.org, victim@example.net",
        "analyst@example.org victim@example.net",
        "analyst",
        "analyst@",
        "@example.org",
        "",
        "analyst@example.org\x00",
        "=?utf-8?q?a?=@example.org\r\nBcc: victim@example.net",
    ],
)
def test_a_bad_address_is_refused_before_anything_is_sent(address: str) -> None:
    """Composed by the email package or written straight to bytes (`mail_bytes`)."""
    with pytest.raises(ValueError, match="address"):
        compose(message(to=address))
    with pytest.raises(ValueError, match="address"):
        compose(message(), from_address=address)
    with pytest.raises(ValueError, match="address"):
        mail_bytes(message(to=address), FROM, DOMAIN)
    with pytest.raises(ValueError, match="address"):
        mail_bytes(message(), address, DOMAIN)


async def test_a_message_that_cannot_be_addressed_fails_permanently_unsent(
    sink: SmtpSink,
) -> None:
    channel = EmailChannel(config(sink))
    try:
        bad_to = await channel.send(message(to="analyst@example.org\r\nBcc: x@example.net"))
        bad_id = await channel.send(message(delivery_id="row>"))
    finally:
        await channel.close()
    for result in (bad_to, bad_id):
        assert result.outcome is Outcome.PERMANENT
        assert result.detail.startswith("cannot address the message: ")
        assert result.content_sha256 is None
    assert (sink.connections, sink.messages) == (0, [])


def test_a_message_id_cannot_be_smuggled_through_the_row_id() -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        compose(message(delivery_id="row>\r\nBcc: victim@example.net"))


@pytest.mark.parametrize(
    ("to", "outcome", "code"),
    [
        ("tempfail@example.org", Outcome.TRANSIENT, "451"),
        ("reject@example.org", Outcome.PERMANENT, "550"),
        ("datadefer@example.org", Outcome.TRANSIENT, "452"),
        ("datafail@example.org", Outcome.PERMANENT, "554"),
    ],
)
async def test_reply_codes(sink: SmtpSink, to: str, outcome: Outcome, code: str) -> None:
    channel = EmailChannel(config(sink))
    try:
        result = await channel.send(message(to=to))
        after = await channel.send(message())  # the connection is still good afterwards
    finally:
        await channel.close()
    assert (result.outcome, result.detail[:3], result.provider_id) == (outcome, code, None)
    assert after.outcome is Outcome.SENT
    assert sink.connections == 1
    assert len(sink.messages) == 1


@pytest.mark.parametrize(
    ("to", "cc", "outcome"),
    [
        ("tempfail@example.org", "other@example.org", Outcome.TRANSIENT),
        ("reject@example.org", "other@example.org", Outcome.PERMANENT),
        (TO, "reject@example.org", Outcome.SENT),
    ],
)
async def test_when_some_recipients_are_refused_the_rows_own_decides(
    sink: SmtpSink, to: str, cc: str, outcome: Outcome
) -> None:
    channel = EmailChannel(config(sink))
    mail = channel.compose(message(to=to))
    mail["Cc"] = cc
    try:
        result = await channel.submit(mail)
    finally:
        await channel.close()
    assert result.outcome is outcome
    assert len(sink.messages) == 1  # the server took it for the one it accepted


async def test_a_closed_port_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = EmailChannel(
        SmtpConfig("127.0.0.1", port, "none", None, None, FROM, timeout_seconds=2)
    )
    try:
        result = await channel.send(message())
    finally:
        await channel.close()
    assert result.outcome is Outcome.TRANSIENT
    assert result.detail.startswith("connection failed")


@pytest.mark.parametrize("to", ["hang@example.org", "stall@example.org"])
async def test_a_server_that_stops_answering_times_out_as_transient(
    sink: SmtpSink, to: str
) -> None:
    channel = EmailChannel(config(sink, timeout_seconds=0.5))
    try:
        result = await channel.send(message(to=to))
        after = await channel.send(message())  # the hung connection was not reused
    finally:
        await channel.close()
    assert (result.outcome, result.detail) == (Outcome.TRANSIENT, "timed out")
    assert after.outcome is Outcome.SENT
    assert sink.connections == 2


async def test_auth_with_the_right_password() -> None:
    async with start_smtp_sink(credentials=("relay", "s3cret"), auth_required=True) as sink:
        channel = EmailChannel(config(sink, username="relay", password="s3cret"))
        try:
            result = await channel.send(message())
        finally:
            await channel.close()
        assert result.outcome is Outcome.SENT
        assert len(sink.messages) == 1


@pytest.mark.parametrize(("username", "password"), [("relay", "wrong"), (None, None)])
async def test_failed_or_missing_auth_is_transient(
    username: str | None, password: str | None
) -> None:
    async with start_smtp_sink(credentials=("relay", "s3cret"), auth_required=True) as sink:
        channel = EmailChannel(config(sink, username=username, password=password))
        try:
            result = await channel.send(message())
        finally:
            await channel.close()
        assert result.outcome is Outcome.TRANSIENT
        assert result.detail.startswith("smtp authentication failed")
        assert ("530" if username is None else "535") in result.detail
        assert sink.messages == []


def test_the_password_is_not_in_the_config_repr() -> None:
    settings = SmtpConfig("smtp.example", 587, "starttls", "relay", "s3cret", FROM)
    assert "s3cret" not in repr(settings)
    with pytest.raises(ValueError, match="security"):
        dataclasses.replace(settings, security="ssl")


async def test_sequential_sends_reuse_one_connection(sink: SmtpSink) -> None:
    channel = EmailChannel(config(sink))
    try:
        results = [await channel.send(message(delivery_id=f"row-{i}")) for i in range(10)]
    finally:
        await channel.close()
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert (len(sink.messages), sink.connections, sink.quits) == (10, 1, 1)


async def test_concurrent_sends_open_at_most_pool_size_connections(sink: SmtpSink) -> None:
    channel = EmailChannel(config(sink, pool_size=3))
    try:
        results = await asyncio.gather(
            *(channel.send(message(delivery_id=f"row-{i}")) for i in range(30))
        )
    finally:
        await channel.close()
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert len(sink.messages) == 30
    assert sink.connections == 3  # the first three took the free slots; the rest waited
    assert sink.quits == sink.connections  # close() said QUIT on each pooled connection
    ids = sorted(str(m.parsed()["Message-ID"]) for m in sink.messages)
    assert ids == sorted(f"<row-{i}@dissemination.local>" for i in range(30))


async def test_a_connection_the_server_closed_is_replaced(sink: SmtpSink) -> None:
    channel = EmailChannel(config(sink))
    try:
        first = await channel.send(message(delivery_id="row-1"))
        sink.drop_connections()
        second = await channel.send(message(delivery_id="row-2"))
        third = await channel.send(message(delivery_id="row-3"))
    finally:
        await channel.close()
    assert [r.outcome for r in (first, second, third)] == [Outcome.SENT] * 3
    assert sink.connections == 2
    assert [str(m.parsed()["Message-ID"]) for m in sink.messages] == [
        f"<row-{i}@dissemination.local>" for i in (1, 2, 3)
    ]


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_with_a_trusted_certificate(
    certificate: tuple[Path, Path], security: Literal["starttls", "tls"]
) -> None:
    async with start_smtp_sink(
        security=security, certificate=certificate, credentials=("relay", "s3cret")
    ) as sink:
        settings = config(
            sink,
            security=security,
            cert_bundle=str(certificate[0]),
            username="relay",
            password="s3cret",
        )
        channel = EmailChannel(settings)
        try:
            result = await channel.send(message())
        finally:
            await channel.close()
        assert result.outcome is Outcome.SENT
        assert len(sink.messages) == 1


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_untrusted_certificate_is_refused_as_transient(
    certificate: tuple[Path, Path], security: Literal["starttls", "tls"]
) -> None:
    async with start_smtp_sink(security=security, certificate=certificate) as sink:
        channel = EmailChannel(config(sink, security=security))
        try:
            result = await channel.send(message())
        finally:
            await channel.close()
        assert result.outcome is Outcome.TRANSIENT
        assert "certificate" in result.detail.lower()
        assert sink.messages == []


async def test_starttls_required_by_the_server_but_not_configured_is_transient(
    certificate: tuple[Path, Path],
) -> None:
    async with start_smtp_sink(security="starttls", certificate=certificate) as sink:
        channel = EmailChannel(config(sink, security="none"))
        try:
            result = await channel.send(message())
        finally:
            await channel.close()
        assert result.outcome is Outcome.TRANSIENT, result
        assert sink.messages == []


@pytest.mark.parametrize(
    ("status", "label"),
    [("Exercise", "EXERCISE"), ("Test", "TEST"), ("System", "SYSTEM"), ("Draft", "DRAFT")],
)
def test_a_message_that_is_not_an_actual_alert_says_so_first(status: str, label: str) -> None:
    outbound = message()
    outbound = dataclasses.replace(outbound, document=outbound.document | {"status": status})
    parsed = compose(outbound)
    assert subject(parsed).startswith(f"{label} [TLP:AMBER LES] Severe: Flash Flood Warning")
    text = body(parsed, "plain")
    assert text.startswith(f"{label}: this ")
    assert f"{label}: this " in body(parsed, "html")


def test_an_actual_alert_carries_no_status_notice() -> None:
    parsed = compose(message())
    assert subject(parsed).startswith("[TLP:AMBER LES]")
    assert body(parsed, "plain").startswith("TLP:AMBER LES\n")
