"""The SMS channel through the real twilio SDK against a loopback Twilio fake: senders, the
error-to-outcome table, timeouts, auth, signed status callbacks; and the SMS text itself:
markings, what restricted alerts leave out, GSM-7 and the two-segment limit."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.base import OutboundMessage, Outcome
from channels.content import AlertContent, Rendering
from channels.sms import SmsChannel, SmsOff, TwilioConfig, rewrite_url
from channels.smsinbound import Keyword, opt_keyword, status_update, valid_twilio_signature
from channels.smstext import gsm7_septets, segments, to_gsm7
from core.clock import utc_now
from dissemination.api.errors import error_middleware
from dissemination.api.twiliohooks import INBOUND_HOOK, TwilioHooks, add_twilio_hooks
from dissemination.delivery.configure import STATUS_HOOK
from dissemination.settings import load_settings
from dissemination.store.database import Database
from testbed.twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BROKEN_NUMBER,
    FROM_NUMBER,
    HANGING_NUMBER,
    INVALID_NUMBER,
    NOT_MOBILE_NUMBER,
    OPTED_OUT_NUMBER,
    RATE_LIMITED_NUMBER,
    SERVICE_SID,
    TwilioFake,
)

RECIPIENT = "+15558675310"
SID = re.compile(r"^SM[0-9a-f]{32}$")


@pytest.fixture
async def fake() -> AsyncIterator[TwilioFake]:
    async with TwilioFake() as running:
        yield running


def config(fake: TwilioFake, **overrides: Any) -> TwilioConfig:
    values: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "messaging_service_sid": SERVICE_SID,
        "api_base": fake.base_url,
        "timeout_seconds": 5.0,
    }
    return TwilioConfig(**(values | overrides))


def outbound(
    document: dict[str, Any], rendering: Rendering, to: str = RECIPIENT
) -> OutboundMessage:
    return OutboundMessage(
        rendering.delivery_id, to, document, (str(document["id"]), False), rendering
    )


SHORT = {"id": "a-0", "handling": {"tlp": "AMBER"}, "infos": [{"headline": "hi"}]}
SHORT_TEXT = "TLP:AMBER\nhi"
"""What `SHORT` becomes as a text with no acknowledgment owed."""


def short(delivery_id: str = "d-1", to: str = RECIPIENT) -> OutboundMessage:
    return outbound(SHORT, Rendering(delivery_id), to)


async def send_one(cfg: TwilioConfig, to: str = RECIPIENT) -> Any:
    channel = SmsChannel(cfg)
    try:
        return await channel.send(short(to=to))
    finally:
        await channel.close()


@dataclass
class Receiver:
    url: str = ""
    posts: list[tuple[dict[str, str], str]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """Where status callbacks land: records each form and its X-Twilio-Signature."""
    received = Receiver()

    async def handle(request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        received.posts.append((form, request.headers.get("X-Twilio-Signature", "")))
        received.arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/sms/status", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    received.url = f"http://{host}:{port}/hooks/sms/status?tenant=a"
    yield received
    await runner.cleanup()


def test_a_sender_is_required() -> None:
    with pytest.raises(ValueError, match="messaging_service_sid or from_number"):
        TwilioConfig(ACCOUNT_SID, AUTH_TOKEN)


async def test_sent_through_a_messaging_service(fake: TwilioFake, receiver: Receiver) -> None:
    result = await send_one(config(fake, status_callback_url=receiver.url))
    assert result.outcome is Outcome.SENT
    assert result.provider_id is not None
    assert SID.match(result.provider_id)
    [form] = fake.attempts
    assert form["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in form
    assert (form["To"], form["Body"], form["StatusCallback"]) == (
        RECIPIENT,
        SHORT_TEXT,
        receiver.url,
    )
    assert result.content_sha256 == hashlib.sha256(SHORT_TEXT.encode()).hexdigest()
    assert [m["sid"] for m in fake.messages] == [result.provider_id]


async def test_sent_from_a_number(fake: TwilioFake) -> None:
    result = await send_one(config(fake, messaging_service_sid=None, from_number=FROM_NUMBER))
    assert result.outcome is Outcome.SENT
    [form] = fake.attempts
    assert form["From"] == FROM_NUMBER
    assert "MessagingServiceSid" not in form
    assert "StatusCallback" not in form
    assert fake.messages[0]["sid"] == result.provider_id
    assert fake.messages[0]["num_segments"] == "1"


async def test_the_form_reaches_twilio_as_sent_whatever_its_characters(fake: TwilioFake) -> None:
    """The SDK's fields are form-encoded by us, not by aiohttp: every character a text can
    hold (the form's own &, =, +, %, line breaks, GSM-7 letters beyond ASCII) arrives as
    it was, with the form's content type."""
    body = "TLP:AMBER a&b=c+d 100% \u00e9\u00fc\u00c7 \u20ac{}\nline two\r\n[3]"
    channel = SmsChannel(config(fake))
    try:
        result = await channel._create(RECIPIENT, body)
    finally:
        await channel.close()
    assert result.outcome is Outcome.SENT
    [form] = fake.attempts
    assert (form["To"], form["Body"], form["MessagingServiceSid"]) == (
        RECIPIENT,
        body,
        SERVICE_SID,
    )
    assert fake.content_types == ["application/x-www-form-urlencoded"]


@pytest.mark.parametrize(
    ("to", "outcome", "detail", "retry_after", "disable"),
    [
        (RATE_LIMITED_NUMBER, Outcome.TRANSIENT, "HTTP 429 Twilio 20429", 7.0, False),
        (INVALID_NUMBER, Outcome.PERMANENT, "HTTP 400 Twilio 21211", None, True),
        (NOT_MOBILE_NUMBER, Outcome.PERMANENT, "HTTP 400 Twilio 21614", None, True),
        (OPTED_OUT_NUMBER, Outcome.PERMANENT, "opted_out: HTTP 400 Twilio 21610", None, False),
        (BROKEN_NUMBER, Outcome.TRANSIENT, "HTTP 500 Twilio 20500", None, False),
    ],
)
async def test_errors_by_recipient(
    fake: TwilioFake,
    to: str,
    outcome: Outcome,
    detail: str,
    retry_after: float | None,
    disable: bool,
) -> None:
    result = await send_one(config(fake), to=to)
    assert (result.outcome, result.retry_after_seconds, result.disable_address) == (
        outcome,
        retry_after,
        disable,
    )
    assert result.detail.startswith(detail)
    assert result.opted_out is (to == OPTED_OUT_NUMBER)
    assert to not in result.detail  # no phone numbers in ledger details
    assert fake.messages == []


@pytest.mark.parametrize(
    ("status", "code", "retry_after", "outcome", "expected_retry"),
    [
        (429, 20429, "2", Outcome.TRANSIENT, 2.0),
        (429, None, None, Outcome.TRANSIENT, None),
        (400, 20429, None, Outcome.TRANSIENT, None),
        (503, 20503, "30", Outcome.TRANSIENT, 30.0),
        (400, 30006, None, Outcome.PERMANENT, None),
        (400, 21408, None, Outcome.PERMANENT, None),
        (404, 20404, None, Outcome.PERMANENT, None),
    ],
)
async def test_scripted_errors(
    fake: TwilioFake,
    status: int,
    code: int | None,
    retry_after: str | None,
    outcome: Outcome,
    expected_retry: float | None,
) -> None:
    fake.fail_next(1, status, code, retry_after=retry_after)
    result = await send_one(config(fake))
    assert (result.outcome, result.retry_after_seconds) == (outcome, expected_retry)
    assert (await send_one(config(fake))).outcome is Outcome.SENT  # the script is used up


async def test_retry_after_belongs_to_its_own_send(fake: TwilioFake) -> None:
    channel = SmsChannel(config(fake))
    try:
        results = await asyncio.gather(
            *(
                channel.send(short(f"d-{i}", to))
                for i, to in enumerate([RECIPIENT, RATE_LIMITED_NUMBER, BROKEN_NUMBER] * 3)
            )
        )
    finally:
        await channel.close()
    assert [r.retry_after_seconds for r in results] == [None, 7.0, None] * 3
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.TRANSIENT, Outcome.TRANSIENT] * 3


async def test_a_hanging_api_is_a_transient_timeout(fake: TwilioFake) -> None:
    result = await send_one(config(fake, timeout_seconds=0.2), to=HANGING_NUMBER)
    assert (result.outcome, result.detail) == (Outcome.TRANSIENT, "timed out")
    assert fake.hung == 1


async def test_hang_next_then_recovers(fake: TwilioFake) -> None:
    fake.hang_next()
    channel = SmsChannel(config(fake, timeout_seconds=0.2))
    try:
        first = await channel.send(short())
        second = await channel.send(short())
    finally:
        await channel.close()
    assert (first.outcome, second.outcome) == (Outcome.TRANSIENT, Outcome.SENT)


async def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = TwilioConfig(ACCOUNT_SID, AUTH_TOKEN, SERVICE_SID, api_base=f"http://127.0.0.1:{port}")
    result = await send_one(cfg)
    assert result.outcome is Outcome.TRANSIENT
    assert result.detail.startswith("connection failed")


async def test_wrong_credentials_are_transient(fake: TwilioFake) -> None:
    # our configuration, not the row's number: the row waits for the fix (behind the
    # breaker) rather than failing over to its next channel with every other row
    result = await send_one(config(fake, auth_token="not-the-token"))
    assert (result.outcome, result.detail) == (
        Outcome.TRANSIENT,
        "HTTP 401 Twilio 20003 (twilio refused the account's credentials)",
    )
    assert fake.attempts == []


async def test_close_closes_the_session(fake: TwilioFake) -> None:
    channel = SmsChannel(config(fake))
    await channel.send(short())
    session = channel.http.session
    assert session is not None
    assert not session.closed
    await channel.close()
    assert session.closed


async def test_a_text_that_cannot_be_composed_fails_permanently_unsent(fake: TwilioFake) -> None:
    too_long = Rendering("d-1", ack_url="https://x.example/" + "a" * 400)
    channel = SmsChannel(config(fake))
    try:
        result = await channel.send(outbound(SHORT, too_long))
    finally:
        await channel.close()
    assert result.outcome is Outcome.PERMANENT
    assert result.detail.startswith("cannot compose the text: ")
    assert result.content_sha256 is None
    assert fake.attempts == []


WEATHER = "https://www.weather.gov/"


@pytest.mark.parametrize(
    ("length", "kept"), [(2000, False), (400, False), (154, False), (153, True)]
)
async def test_a_long_web_link_is_left_out_and_the_text_still_sent(
    fake: TwilioFake, length: int, kept: bool
) -> None:
    web = WEATHER + "x" * (length - len(WEATHER))
    document = alert("GREEN", web=web, instruction="Move to higher ground.")
    channel = SmsChannel(config(fake))
    try:
        result = await channel.send(outbound(document, Rendering("d-1")))
    finally:
        await channel.close()
    assert result.outcome is Outcome.SENT
    [form] = fake.attempts
    lines = form["Body"].splitlines()
    assert lines[:3] == ["TLP:GREEN", "Severe Flash Flood Warning", "Flooding on River Road"]
    assert (lines[-1] == web) is kept
    assert (WEATHER in form["Body"]) is kept
    assert segments(form["Body"]) <= 2


async def test_switched_off_every_send_fails_permanently() -> None:
    channel = SmsOff()
    result = await channel.send(short())
    await channel.close()
    assert (channel.name, channel.host(short())) == ("sms", "twilio")
    assert (result.outcome, result.detail) == (
        Outcome.PERMANENT,
        'sms is switched off (sms.transport = "off")',
    )


async def test_sends_are_paced_to_the_messages_per_second(fake: TwilioFake) -> None:
    channel = SmsChannel(config(fake), messages_per_second=4)
    started = time.monotonic()
    try:
        results = await asyncio.gather(*(channel.send(short(f"d-{i}")) for i in range(8)))
    finally:
        await channel.close()
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert time.monotonic() - started >= 0.9  # four at once, then one every quarter second
    assert channel.host(short()) == "twilio"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?a=1",
            "http://127.0.0.1:8/2010-04-01/Accounts/AC1/Messages.json?a=1",
        ),
        ("https://messaging.twilio.com/v1/Services", "http://127.0.0.1:8/v1/Services"),
        ("https://api.dublin.ie1.twilio.com/x", "http://127.0.0.1:8/x"),
        ("https://eviltwilio.com/x", "https://eviltwilio.com/x"),
        ("https://example.org/x", "https://example.org/x"),
    ],
)
def test_only_twilio_hosts_are_rewritten(url: str, expected: str) -> None:
    assert rewrite_url(url, "http://127.0.0.1:8") == expected
    assert rewrite_url(url, None) == url


async def test_status_callbacks_are_signed(fake: TwilioFake, receiver: Receiver) -> None:
    sent = await send_one(config(fake, status_callback_url=receiver.url))
    assert sent.provider_id is not None
    status = await fake.send_status_callback(sent.provider_id, "undelivered", 30003)
    await receiver.arrived.wait()
    assert status == 204
    [(form, signature)] = receiver.posts
    assert valid_twilio_signature(AUTH_TOKEN, receiver.url, form, signature)
    assert status_update(form) == (sent.provider_id, "undelivered", "30003")
    tampered = form | {"MessageStatus": "delivered"}
    assert not valid_twilio_signature(AUTH_TOKEN, receiver.url, tampered, signature)
    assert not valid_twilio_signature("another-token", receiver.url, form, signature)
    assert not valid_twilio_signature(AUTH_TOKEN, receiver.url + "&b=2", form, signature)
    assert not valid_twilio_signature(AUTH_TOKEN, receiver.url, form, "")


def test_inbound_forms_are_signed(fake: TwilioFake) -> None:
    url = "https://dissemination.example.gov/hooks/sms/inbound"
    form, headers = fake.inbound_sms(url, from_=RECIPIENT, body=" Stop ")
    assert valid_twilio_signature(AUTH_TOKEN, url, form, headers["X-Twilio-Signature"])
    assert opt_keyword(form["Body"]) is Keyword.STOP
    assert not valid_twilio_signature(
        AUTH_TOKEN, url, form | {"Body": "START"}, headers["X-Twilio-Signature"]
    )


# --- the hooks' forms -----------------------------------------------------------------------

MALFORMED_FORMS: list[tuple[str, bytes, dict[str, str]]] = [
    ("application/x-www-form-urlencoded; charset=nope", b"From=x", {}),
    ("application/x-www-form-urlencoded", b"\xff\xfe=1", {}),
    ("application/x-www-form-urlencoded; charset=utf-16", b"a=b", {}),
    ("application/x-www-form-urlencoded", b"From=%2B1555&Body=a%00b", {}),
    ("application/x-www-form-urlencoded", b"From=x", {"Content-Encoding": "gzip"}),
    ("multipart/form-data", b"xx", {}),
    ("multipart/form-data; boundary=zz", b"garbage", {}),
    ("multipart/form-data; boundary=" + "z" * 100, b"x", {}),
    ("multipart/form-data; boundary=zz", b"--zz\r\n\r\nv\r\n--zz--\r\n", {}),
    ("multipart/form-data; boundary=zz", b"--zz\r\nbad header\r\n\r\nv\r\n--zz--\r\n", {}),
    (
        "multipart/form-data; boundary=zz",
        b'--zz\r\nContent-Disposition: form-data; name="a"\r\n'
        b"Content-Transfer-Encoding: xx\r\n\r\nv\r\n--zz--\r\n",
        {},
    ),
    (
        "multipart/form-data; boundary=zz",
        b'--zz\r\nContent-Disposition: form-data; name="a"\r\n'
        b"Content-Type: text/plain; charset=nope\r\n\r\nv\r\n--zz--\r\n",
        {},
    ),
    (
        "multipart/form-data; boundary=zz",
        b'--zz\r\nContent-Disposition: form-data; name="a"\r\n\r\n\xff\r\n--zz--\r\n',
        {},
    ),
    (
        "multipart/form-data; boundary=zz",
        b'--zz\r\nContent-Disposition: form-data; name="a"; filename="f"\r\n\r\nv\r\n--zz--\r\n',
        {},
    ),
    # Found by tests/test_fuzz.py: a part header is decoded with surrogateescape.
    (
        "multipart/form-data; boundary=zz",
        b'--zz\r\nContent-Disposition: form-data; name="\xed\xa0\x80"\r\n\r\nv\r\n--zz--\r\n',
        {"X-Twilio-Signature": "c2lnbmF0dXJl"},
    ),
]


FORM_IDS = [
    "unknown-charset",
    "not-utf-8",
    "utf-16-urlencoded",
    "nul",
    "not-gzip",
    "multipart-without-boundary",
    "no-starting-boundary",
    "boundary-too-long",
    "field-without-name",
    "bad-part-header",
    "unknown-transfer-encoding",
    "part-with-unknown-charset",
    "part-not-utf-8",
    "file-field",
    "name-not-unicode",
]


@pytest.fixture
async def hooks_url(tmp_path: Path) -> AsyncIterator[str]:
    """The Twilio hooks alone, SMS configured, on loopback (the store is never reached by
    a form that cannot be read)."""
    settings = load_settings(
        {
            "DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path),
            "DISSEMINATION_SMS_ACCOUNT_SID": ACCOUNT_SID,
            "DISSEMINATION_SMS_AUTH_TOKEN": AUTH_TOKEN,
            "DISSEMINATION_SMS_FROM_NUMBER": FROM_NUMBER,
        }
    )
    database = Database.from_settings(settings.store, settings.data_path)
    app = web.Application(middlewares=[error_middleware])
    add_twilio_hooks(app, TwilioHooks(database, settings, utc_now))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()
    await database.close()


@pytest.mark.parametrize("hook", [STATUS_HOOK, INBOUND_HOOK])
@pytest.mark.parametrize(("content_type", "body", "headers"), MALFORMED_FORMS, ids=FORM_IDS)
async def test_a_form_that_cannot_be_read_is_400(
    hooks_url: str, hook: str, content_type: str, body: bytes, headers: dict[str, str]
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            hooks_url + hook, data=body, headers={"Content-Type": content_type, **headers}
        ) as response,
    ):
        assert response.status == 400, await response.text()
        assert (await response.json())["error"]["code"] == "invalid_form"


async def test_a_readable_unsigned_form_is_still_403(hooks_url: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(hooks_url + INBOUND_HOOK, data={"From": "+15558675310"}) as response,
    ):
        assert response.status == 403


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        *[(w, Keyword.STOP) for w in ("STOP", "stopall", "Unsubscribe", "cancel", "END", "quit")],
        *[(w, Keyword.START) for w in ("START", "yes", "Unstop")],
        *[(w, Keyword.HELP) for w in ("HELP", "info")],
        ("  stop\n", Keyword.STOP),
        ("STOP please", None),
        ("please stop", None),
        ("S T O P", None),
        ("ACK 4821", None),
        ("", None),
    ],
)
def test_opt_keywords(body: str, keyword: Keyword | None) -> None:
    assert opt_keyword(body) is keyword


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"MessageSid": "SM1", "MessageStatus": "delivered"}, ("SM1", "delivered", None)),
        (
            {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003"},
            ("SM1", "undelivered", "30003"),
        ),
        (
            {"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "30005"},
            ("SM1", "failed", "30005"),
        ),
        (
            {"MessageSid": "SM1", "MessageStatus": "delivered", "ErrorCode": ""},
            ("SM1", "delivered", None),
        ),
        *[
            ({"MessageSid": "SM1", "MessageStatus": s}, None)
            for s in ("queued", "accepted", "sending", "sent", "unknown")
        ],
        ({"MessageStatus": "delivered"}, None),
        ({}, None),
    ],
)
def test_status_updates(
    params: dict[str, str], expected: tuple[str, str, str | None] | None
) -> None:
    assert status_update(params) == expected


# ---- the text ----------------------------------------------------------------------------

SECRETS = {
    "description": "DESCRIPTIONSECRET",
    "instruction": "INSTRUCTIONSECRET",
    "sender_name": "SENDERSECRET",
}
LINK = "https://portal.example.gov/a/1?k=xyz"


def alert(tlp: str, caveats: tuple[str, ...] = (), **info: Any) -> dict[str, Any]:
    """A stored alert document with the sensitive parts marked SECRET."""
    fields: dict[str, Any] = {
        "event": "Flash Flood Warning",
        "severity": "Severe",
        "headline": "Flooding on River Road",
        "areas": [{"description": "AREASECRET North"}, {"description": "AREASECRET South"}],
        "web": "https://web.example.org/WEBSECRET",
        **SECRETS,
    }
    fields.update(info)
    return {
        "id": "a-1",
        "sender": "SENDERSECRET@example.gov",
        "handling": {"tlp": tlp, "caveats": list(caveats)},
        "infos": [fields],
    }


def compose(document: dict[str, Any], rendering: Rendering) -> str:
    return SmsChannel.compose(outbound(document, rendering))


RENDERING = Rendering("d-1", ack_url=LINK, ack_code="4821")


@pytest.mark.parametrize("tlp", ["AMBER", "AMBER+STRICT", "RED"])
def test_restricted_alerts_carry_only_marking_headline_code_and_link(tlp: str) -> None:
    text = compose(alert(tlp, ("LES",)), RENDERING)
    assert text == f"TLP:{tlp} LES\nFlooding on River Road\nReply ACK 4821\n{LINK}"
    assert "SECRET" not in text
    assert "Flash Flood" not in text


def test_restricted_without_an_ack_url_uses_the_portal_never_the_alert_web() -> None:
    text = compose(alert("RED"), Rendering("d-1", portal_url="https://portal.example.gov/p"))
    assert text.endswith("\nhttps://portal.example.gov/p")
    assert "SECRET" not in text


@pytest.mark.parametrize("tlp", ["CLEAR", "GREEN"])
def test_shareable_alerts_carry_severity_event_headline_area_and_instruction(tlp: str) -> None:
    text = compose(alert(tlp, instruction="Move to higher ground."), RENDERING)
    assert text.splitlines() == [
        f"TLP:{tlp}",
        "Severe Flash Flood Warning",
        "Flooding on River Road",
        "Area: AREASECRET North, AREASECRET South",
        "Move to higher ground.",
        "Reply ACK 4821",
        LINK,
    ]
    assert "DESCRIPTIONSECRET" not in text
    assert "SENDERSECRET" not in text


def test_long_parts_are_cut_in_the_middle_never_the_marking_code_or_link() -> None:
    document = alert("GREEN", ("PII",), headline="Levee breach " * 40, instruction="Go " * 200)
    text = compose(document, RENDERING)
    lines = text.splitlines()
    assert lines[0] == "TLP:GREEN PII"
    assert lines[2].startswith("Levee breach Levee")
    assert lines[2].endswith(" breach...")
    assert lines[-2:] == ["Reply ACK 4821", LINK]
    assert segments(text) == 2
    assert gsm7_septets(text) is not None


@pytest.mark.parametrize("lead", range(4))
def test_an_escape_pair_on_the_segment_boundary_still_fits(lead: int) -> None:
    # for some leads 306 septets would put an escape pair across the boundary: three parts
    document = alert("CLEAR", headline="a" * lead + "€" * 400)
    text = compose(document, Rendering("d-1", ack_code="1", portal_url="https://p.example/"))
    assert segments(text) == 2
    assert (gsm7_septets(text) or 0) > 300


def test_a_link_that_cannot_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="exceed two SMS segments"):
        compose(alert("RED"), Rendering("d-1", ack_url="https://x.example/" + "a" * 400))


@pytest.mark.parametrize(
    ("text", "septets"),
    [("", 0), ("abc", 3), ("€", 2), ("[x]", 5), ("é Ä ß", 5), ("ç", None), ("😀", None)],
)
def test_gsm7_septets(text: str, septets: int | None) -> None:
    assert gsm7_septets(text) == septets


GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The GSM 03.38 basic character set; its extension table is the nine below."""
GSM_EXTENSION = "\f^{}\\[~]|€"


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(GSM_BASIC + GSM_EXTENSION) | st.characters(), max_size=400))
def test_gsm7_septets_counts_one_per_character_and_two_per_extension(text: str) -> None:
    """The counting done in C agrees with the definition, a character at a time."""
    if all(c in GSM_BASIC or c in GSM_EXTENSION for c in text):
        assert gsm7_septets(text) == sum(2 if c in GSM_EXTENSION else 1 for c in text)
    else:
        assert gsm7_septets(text) is None


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),
        ("a" * 152 + "€" + "a" * 152, 3),  # the escape pair cannot straddle the boundary
        ("ç" * 70, 1),
        ("ç" * 71, 2),
        ("😀" * 35, 1),
        ("😀" * 36, 2),
    ],
)
def test_segments(text: str, count: int) -> None:
    assert segments(text) == count


@pytest.mark.parametrize(
    ("raw", "gsm"),
    [
        ("\u201cEvacuate\u201d \u2013 now\u2026", '"Evacuate" - now...'),
        ("Café crème, façade", "Café crème, facade"),
        ("Zürich Ñandú", "Zürich Ñandu"),
        ("fire 🔥  \n here", "fire ? here"),
        ("①②", "12"),
    ],
)
def test_to_gsm7(raw: str, gsm: str) -> None:
    assert to_gsm7(raw) == gsm


SENT_LINKS = {
    LINK: LINK,
    "https://portal.example.gov/ü/é?x=`|{}^~[]": (
        "https://portal.example.gov/%C3%BC/%C3%A9?x=%60%7C%7B%7D%5E~[]"
    ),
}


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    tlp=st.sampled_from(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]),
    caveats=st.lists(st.sampled_from(["LES", "PII", "FOUO"]), max_size=2, unique=True),
    texts=st.fixed_dictionaries(
        {
            key: st.text(max_size=400)
            for key in ("event", "severity", "headline", "instruction", "description")
        }
    ),
    areas=st.lists(st.text(max_size=80), max_size=6),
    ack_code=st.one_of(st.none(), st.from_regex(r"[0-9]{4,8}", fullmatch=True)),
    link=st.sampled_from([*SENT_LINKS, None]),
    web=st.one_of(st.sampled_from(["", LINK]), st.text(max_size=80), st.text(min_size=150)),
)
def test_every_text_is_gsm7_in_two_segments(
    tlp: str,
    caveats: list[str],
    texts: dict[str, str],
    areas: list[str],
    ack_code: str | None,
    link: str | None,
    web: str,
) -> None:
    document = alert(
        tlp, tuple(caveats), areas=[{"description": a} for a in areas], web=web, **texts
    )
    text = compose(document, Rendering("d-1", ack_url=link, ack_code=ack_code))
    marking = AlertContent.from_document(document).marking
    assert gsm7_septets(text) is not None
    assert segments(text) <= 2
    assert text == marking or text.startswith(marking + "\n")
    if ack_code is not None:
        assert f"\nReply ACK {ack_code}" in text
    if link is not None:
        assert text.endswith("\n" + SENT_LINKS[link])


@pytest.mark.parametrize(("status", "label"), [("Exercise", "EXERCISE"), ("Test", "TEST")])
def test_a_text_of_an_exercise_or_test_says_so_before_its_marking(status: str, label: str) -> None:
    text = SmsChannel.compose(outbound(SHORT | {"status": status}, Rendering("d-1")))
    assert text == f"{label} {SHORT_TEXT}"
    assert SmsChannel.compose(short()) == SHORT_TEXT
