"""An RFC 2047 encoded word in alert text cannot make headers. The `email` package decodes
"=?utf-8?q?...=0D=0A...?=" in any header value it is given, and wrote the CR/LF it decoded
as it was: a Reply-To of the sender's choosing, then a blank line that pushed From, To and
the MIME headers into the body. `header_text` breaks every "=?" with a WORD JOINER (shown as
before); a header that would still break out of its line is refused, not sent.

Alerts come through the real intake (examples/tornado-warning.xml) and mails go to a real
SMTP server on loopback (testbed/smtp.py), for a plain address (written straight to bytes,
channels/emailwire.py) and an international one (composed by the `email` package, SMTPUTF8).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import channels.email
import channels.emailwire
from channels.base import OutboundMessage, Outcome
from channels.content import Rendering
from channels.email import EmailChannel, mail_bytes
from channels.mailtext import header_text
from core.alert import Tlp
from dissemination.intake.decoding import DecodeLimits, decode_alerts
from dissemination.intake.normalize import HandlingDefaults
from testbed.smtp import Received, SmtpSink, start_smtp_sink
from tests.emailrig import DOMAIN, FROM, TO, config

INJECTION = (
    "=?utf-8?q?Tornado=0D=0AReply-To:_evil@attacker.example=0D=0A=0D=0AAll_clear_ignore_it?="
)
"""Decodes to "Tornado", a Reply-To header line, a blank line and a body of its own."""

INTERNATIONAL = "analyst@例え.jp"

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tornado-warning.xml"
HEADLINE = "Tornado Warning for central Fairfax County until 4:30 PM EDT"
HEADERS = {
    "Subject",
    "From",
    "To",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "X-Alert-Id",
    "MIME-Version",
    "Content-Type",
}
"""Every header an alert mail has, and nothing else."""


def tornado(*replacements: tuple[str, str]) -> dict[str, Any]:
    """The example Tornado Warning as the intake stores it, its XML edited by `replacements`."""
    xml = EXAMPLE.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in xml, old
        xml = xml.replace(old, new)
    limits = DecodeLimits(1_048_576, 64)
    defaults = HandlingDefaults(Tlp.AMBER, Tlp.GREEN)
    (alert,) = decode_alerts(xml.encode(), "application/cap+xml", limits, defaults)
    stored: dict[str, Any] = alert.to_json()
    return stored


def in_headline(text: str) -> dict[str, Any]:
    return tornado((HEADLINE, text))


def in_event(text: str) -> dict[str, Any]:
    return tornado(("<event>Tornado Warning</event>", f"<event>{text}</event>"))


def in_caveat(text: str) -> dict[str, Any]:
    """A CAVEAT parameter (upper-cased by the intake, as it shows in the marking)."""
    parameter = f"<parameter><valueName>CAVEAT</valueName><value>{text}</value></parameter>"
    return tornado(("    <area>", f"    {parameter}\n    <area>"))


def in_alert_id(text: str) -> dict[str, Any]:
    """A stored alert whose id (the X-Alert-Id header) is `text`."""
    return tornado() | {"id": text}


PLACES = {
    "headline": in_headline,
    "event": in_event,
    "caveat": in_caveat,
    "alert id": in_alert_id,
}


def outbound(
    stored: dict[str, Any], to: str, notice: dict[str, Any] | None = None
) -> OutboundMessage:
    return OutboundMessage(
        "row-1", to, stored, (str(stored["id"]), False), Rendering("row-1"), notice=notice
    )


def assert_headers_intact(received: Received, to: str) -> None:
    """The mail arrived for `to` alone with exactly its own headers, none from alert text,
    as one multipart/alternative mail whose marking is in its subject and text."""
    assert received.rcpt_tos == (to,)
    head, _, _ = received.raw.partition(b"\r\n\r\n")
    assert not re.search(rb"(?im)^reply-to:", head), head
    assert all(line[:1] in b" \t" or b":" in line for line in head.split(b"\r\n")), head
    parsed = received.parsed()
    assert set(parsed.keys()) == HEADERS
    assert (parsed["From"], parsed["To"], parsed["MIME-Version"]) == (FROM, to, "1.0")
    assert parsed.get_content_type() == "multipart/alternative"
    assert str(parsed["Subject"]).strip().startswith("[TLP:GREEN")
    plain = parsed.get_body(("plain",))
    assert plain is not None
    assert "TLP:GREEN" in str(plain.get_content())


def shown(received: Received, header: str) -> str:
    """A header as a mail reader shows it, word joiners left out."""
    return str(received.parsed()[header]).strip().replace("\u2060", "")


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with start_smtp_sink() as running:
        yield running


async def sent(sink: SmtpSink, *messages: OutboundMessage) -> list[Received]:
    channel = EmailChannel(config(sink))
    try:
        for message in messages:
            result = await channel.send(message)
            assert result.outcome is Outcome.SENT, result
    finally:
        await channel.close()
    return [await sink.message(index) for index in range(len(messages))]


def test_header_text_breaks_an_encoded_word_but_shows_it_as_it_was() -> None:
    text = header_text(f"Flood {INJECTION} =?x?=")
    assert "=?" not in text
    assert text.replace("\u2060", "") == f"Flood {INJECTION} =?x?="
    assert header_text("a = ? b") == "a = ? b"


@pytest.mark.parametrize("to", [TO, INTERNATIONAL])
@pytest.mark.parametrize("place", PLACES)
async def test_an_encoded_word_in_alert_text_cannot_make_headers(
    sink: SmtpSink, place: str, to: str
) -> None:
    (received,) = await sent(sink, outbound(PLACES[place](INJECTION), to))
    assert_headers_intact(received, to)
    header = "X-Alert-Id" if place == "alert id" else "Subject"
    assert INJECTION.upper() in shown(received, header).upper()


@pytest.mark.parametrize("to", [TO, INTERNATIONAL])
async def test_an_encoded_word_cannot_make_headers_of_a_supervisors_notice(
    sink: SmtpSink, to: str
) -> None:
    """Cleared, the notice's subject shows the alert's headline; not cleared, its marking
    (caveats included). The unacknowledged stakeholder's name is in it too."""
    notices = [
        (in_headline(INJECTION), {"about": INJECTION, "afterSeconds": 600, "cleared": True}),
        (in_caveat(INJECTION), {"about": "Night desk", "afterSeconds": 600, "cleared": False}),
        (tornado(), {"about": INJECTION, "afterSeconds": 600, "cleared": False}),
    ]
    received = await sent(sink, *(outbound(alert, to, notice) for alert, notice in notices))
    for mail in received:
        assert_headers_intact(mail, to)
        plain = mail.parsed().get_body(("plain",))
        assert plain is not None
        assert INJECTION.upper() in f"{shown(mail, 'Subject')} {plain.get_content()}".upper()
    assert INJECTION in shown(received[0], "Subject")
    assert INJECTION.upper() in shown(received[1], "Subject")


@pytest.mark.parametrize("to", [TO, INTERNATIONAL])
async def test_a_header_that_would_break_out_of_its_line_is_refused_unsent(
    sink: SmtpSink, monkeypatch: pytest.MonkeyPatch, to: str
) -> None:
    """The backstop, should alert text ever reach a header undefused (here `header_text`
    without its encoded-word step): the mail fails permanently, and nothing is sent."""

    def undefused(text: str) -> str:
        return " ".join(text.split())

    monkeypatch.setattr(channels.emailwire, "header_text", undefused)
    monkeypatch.setattr(channels.email, "header_text", undefused)
    headline = f"Backstop {to}: {INJECTION}"  # not a subject an earlier test had folded
    with pytest.raises(ValueError, match="'Subject' header would break out of its line"):
        mail_bytes(outbound(in_headline(headline), to), FROM, DOMAIN)
    channel = EmailChannel(config(sink))
    try:
        result = await channel.send(outbound(in_headline(headline), to))
    finally:
        await channel.close()
    assert result.outcome is Outcome.PERMANENT
    assert "would break out of its line" in result.detail
    assert (sink.connections, sink.messages) == (0, [])
