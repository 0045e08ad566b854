"""A mail written straight to bytes (channels/emailwire.py) is the mail the `email` package
composes for the same delivery, byte for byte apart from the MIME boundary and the Date:
for every fixture, for generated alert text (non-ASCII, encoded-word look-alikes, line
breaks, control characters, long lines) and for generated addresses and row ids. A plain
address the fast path accepts without parsing is one the parser reads back unchanged."""

from __future__ import annotations

import email.policy
import hashlib
import random
import re
from dataclasses import replace
from datetime import UTC, datetime
from email.headerregistry import Address
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.base import Outcome
from channels.content import AlertContent, Rendering
from channels.email import EmailChannel, as_sent, build, compose, compose_content
from channels.emailwire import new_boundary, wire_mail
from channels.mailtext import bodies, is_plain_address, rendered_bodies
from core.alert import Tlp
from dissemination.intake.decoding import DecodeLimits, decode_alerts
from dissemination.intake.normalize import HandlingDefaults
from testbed.smtp import SmtpSink, start_smtp_sink
from tests.emailrig import DOMAIN, FROM, TO, config, document, message
from tests.test_content_hash import TYPES, fixtures

NOW = datetime(2026, 12, 6, 19, 0, 5, tzinfo=UTC)
DATE_LINE = b"Date: Sun, 06 Dec 2026 19:00:05 +0000\r\n"
_BOUNDARY = re.compile(rb'boundary="(={15}\d{19}==)"')
_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"


def normalized(raw: bytes) -> bytes:
    """`raw` with its boundary replaced by a fixed one and its Date by `DATE_LINE`."""
    found = _BOUNDARY.search(raw)
    assert found is not None, raw[:400]
    raw = raw.replace(found.group(1), b"=" * 15 + b"0" * 19 + b"==")
    return re.sub(rb"(?m)^Date: [^\r]*\r\n", DATE_LINE.replace(b"\\", b"\\\\"), raw, count=1)


def both(content: AlertContent, rendering: Rendering, to: str = TO) -> tuple[bytes, bytes]:
    """(written directly, composed by the email package), both normalized."""
    wire = wire_mail(content, rendering, to, FROM, DOMAIN, now=NOW)
    assert wire is not None
    reference = as_sent(compose_content(content, rendering, to, FROM, DOMAIN))
    return normalized(wire), normalized(reference)


def test_the_date_and_boundary_are_the_only_differences_for_the_rig_alert() -> None:
    outbound = message(rendering=Rendering("row-1", ack_url="https://a.example/?t=1&u=2"))
    wire = wire_mail(outbound.content(), outbound.rendering, TO, FROM, DOMAIN, now=NOW)
    assert wire is not None
    assert DATE_LINE in wire
    assert normalized(wire) == normalized(as_sent(compose(outbound, FROM, DOMAIN)))
    assert wire.isascii()


def stored_documents() -> list[tuple[str, dict[str, object]]]:
    limits = DecodeLimits(1_048_576, 64)
    defaults = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
    return [
        (path.name, alert.to_json())
        for path in fixtures()
        for alert in decode_alerts(path.read_bytes(), TYPES[path.suffix], limits, defaults)
    ]


@pytest.mark.parametrize(("name", "stored"), stored_documents(), ids=lambda v: str(v)[:40])
def test_every_fixture_is_written_as_the_email_package_composes_it(
    name: str, stored: dict[str, object]
) -> None:
    content = AlertContent.from_document(stored)
    rendering = Rendering("0b6e2f1c-row", ack_url="https://ack.example/a?t=x", portal_url=None)
    wire, reference = both(content, rendering)
    assert wire == reference, name


TEXT = st.lists(
    st.text(st.characters(codec="utf-8"), max_size=40)
    | st.sampled_from(["=?utf-8?q?caf=C3=A9?=", "\r\n", "\n", "=", ".", " ", "From ", "é", "—"])
    | st.just("x" * 90),
    max_size=8,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(
    headline=TEXT,
    event=TEXT,
    description=TEXT,
    alert_id=TEXT,
    status=st.sampled_from(["Actual", "Exercise", "Test"]),
    areas=st.lists(TEXT, max_size=3),
)
def test_generated_alert_text_is_written_as_the_email_package_composes_it(
    headline: str, event: str, description: str, alert_id: str, status: str, areas: list[str]
) -> None:
    content = replace(
        AlertContent.from_document(document()),
        headline=headline,
        event=event,
        description=description,
        alert_id=alert_id,
        status=status,
        areas=tuple(areas),
    )
    wire, reference = both(content, Rendering("row-1", ack_url="https://ack.example/?t=1"))
    assert wire == reference


URL = st.builds(
    lambda path: f"https://ack.example/{path}",
    st.text(st.sampled_from("az09?&=<>\"'#%\r\n é/"), max_size=40),
)


@settings(max_examples=150, deadline=None)
@given(ack_url=st.none() | URL, portal_url=st.none() | URL, headline=TEXT)
def test_each_mails_links_are_written_as_the_templates_render_them(
    ack_url: str | None, portal_url: str | None, headline: str
) -> None:
    """The templates run once per alert and kind of links; each mail's links are put in after
    (escaped for HTML): the same bytes as rendering the templates for every mail."""
    content = replace(AlertContent.from_document(document()), headline=headline)
    rendering = Rendering("row-1", ack_url=ack_url, portal_url=portal_url)
    assert bodies(content, rendering) == rendered_bodies(content, rendering)
    wire, reference = both(content, rendering)
    assert wire == reference


DOT_ATOM = st.text(st.sampled_from(_ATEXT), min_size=1, max_size=30)
LABEL = st.text(st.sampled_from("abz09-"), min_size=1, max_size=30)
PLAIN = st.builds(
    lambda local, domain: f"{'.'.join(local)}@{'.'.join(domain)}",
    st.lists(DOT_ATOM, min_size=1, max_size=3),
    st.lists(LABEL, min_size=1, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(address=PLAIN)
def test_a_plain_address_is_one_the_parser_reads_back_unchanged(address: str) -> None:
    if not is_plain_address(address):  # "=?" in it: left to the parser
        assert "=?" in address
        return
    assert Address(addr_spec=address).addr_spec == address


@settings(max_examples=150, deadline=None)
@given(to=PLAIN, delivery_id=st.text(st.sampled_from("abcXYZ0189._-"), min_size=1, max_size=90))
def test_generated_addresses_and_row_ids_are_written_as_composed(to: str, delivery_id: str) -> None:
    if not is_plain_address(to):
        return
    content = AlertContent.from_document(document())
    wire, reference = both(content, Rendering(delivery_id), to=to)
    assert wire == reference


def test_an_international_address_goes_through_the_email_package() -> None:
    mail = build(message(to="analyst@例え.jp"), FROM, DOMAIN)
    assert isinstance(mail, email.message.EmailMessage)
    assert isinstance(build(message(), FROM, DOMAIN), bytes)


async def sent_through(sink: SmtpSink, to: str) -> tuple[Outcome, str | None, bytes]:
    channel = EmailChannel(config(sink))
    try:
        result = await channel.send(message(to=to))
    finally:
        await channel.close()
    raw = (await sink.message(0)).raw if result.outcome is Outcome.SENT else b""
    return result.outcome, result.content_sha256, raw


@pytest.mark.parametrize("to", [TO, "analyst@例え.jp"])
async def test_the_recorded_hash_is_of_the_bytes_the_relay_received(to: str) -> None:
    async with start_smtp_sink() as sink:
        outcome, sha256, raw = await sent_through(sink, to)
    assert outcome is Outcome.SENT
    assert sha256 == hashlib.sha256(raw).hexdigest()
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert parsed["To"] == to
    assert sink.messages[0].rcpt_tos == (to,)


async def test_an_international_address_to_a_relay_without_smtputf8_fails_permanently() -> None:
    async with start_smtp_sink(smtputf8=False) as sink:
        channel = EmailChannel(config(sink))
        try:
            result = await channel.send(message(to="analyst@例え.jp"))
        finally:
            await channel.close()
    assert result.outcome is Outcome.PERMANENT
    assert "SMTPUTF8" in result.detail
    assert sink.messages == []


def test_boundaries_differ_and_leave_the_random_modules_generator_alone() -> None:
    state = random.getstate()
    boundaries = {new_boundary() for _ in range(100)}
    assert random.getstate() == state
    assert len(boundaries) == 100
    assert all(re.fullmatch(r"={15}\d{19}==", b) for b in boundaries)
