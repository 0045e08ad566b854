"""The webhook channel against real aiohttp receivers on loopback: Standard Webhooks
signatures checked by an independent implementation, the status table, timeouts, redirects,
capped reads and destination checks at save and at connect time (loopback in disguise among
them); and the bodies it composes."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from channels.base import OutboundMessage, Outcome
from channels.content import Rendering
from channels.destinations import address_allowed, check_webhook_url, parse_networks
from channels.errors import DestinationRejected
from channels.webhook import WebhookChannel, new_secret, sign, verdict_key
from channels.webhookbody import alert_body, notice_body, public_alert
from core.errors import ConfigError
from dissemination.settings import load_settings
from testbed.webhooks import WebhookContract, assert_contract
from tests.webhookrig import ALERT, independent_signature

LOOPBACK = parse_networks(["127.0.0.1/32"])


def outbound(
    delivery_id: str,
    url: str,
    secret: str | None,
    document: dict[str, Any] = ALERT,
    notice: dict[str, Any] | None = None,
) -> OutboundMessage:
    return OutboundMessage(
        delivery_id,
        url,
        document,
        (str(document["id"]), False),
        Rendering(delivery_id),
        notice=notice,
        secret=secret,
    )


@dataclass
class Receiver:
    base: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return urlsplit(self.base).port or 80


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    never = asyncio.Event()
    received = Receiver("")
    contract = WebhookContract()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        contract.check(body)
        received.requests.append((dict(request.headers), body))
        name = request.match_info["name"]
        if name == "stall":
            await never.wait()
        if name == "huge":
            response = web.StreamResponse(status=200)
            await response.prepare(request)
            for _ in range(80):
                await response.write(b"x" * 65536)
            return response
        statuses = {
            "ok": 200,
            "accepted": 202,
            "gone": 410,
            "busy": 429,
            "broken": 503,
            "missing": 404,
        }
        if name == "redirect":
            raise web.HTTPFound("/hook/ok")
        if name == "cookie":
            response = web.Response(status=200)
            response.set_cookie("session", "endpoint-a-state", path="/")
            return response
        headers = {"Retry-After": "7"} if name == "busy" else {}
        return web.Response(status=statuses[name], headers=headers)

    app = web.Application()
    app.router.add_post("/hook/{name}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    received.base = f"http://{host}:{port}/hook/"
    yield received
    never.set()
    await runner.cleanup()
    contract.assert_kept()


def test_signature_matches_the_specification_vector() -> None:
    assert (
        sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


async def test_a_signed_delivery_verifies_and_keeps_its_id_on_retry(receiver: Receiver) -> None:
    channel = WebhookChannel(LOOPBACK)
    secret = new_secret()
    message = outbound("delivery-1", receiver.base + "ok", secret)
    body = alert_body(message)
    assert assert_contract(body)["alert"]["identifier"] == "HOOK-1"
    try:
        first = await channel.send(message)
        again = await channel.send(message)
    finally:
        await channel.close()
    assert (first.outcome, again.outcome) == (Outcome.SENT, Outcome.SENT)
    assert first.provider_id == "200"
    assert first.content_sha256 == again.content_sha256 == hashlib.sha256(body).hexdigest()
    for headers, received in receiver.requests:
        assert received == body
        assert headers["webhook-id"] == "delivery-1"
        assert headers["webhook-signature"] == independent_signature(secret, headers, received)
        assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "outcome", "disable", "retry_after"),
    [
        ("accepted", Outcome.SENT, False, None),
        ("gone", Outcome.PERMANENT, True, None),
        ("busy", Outcome.TRANSIENT, False, 7.0),
        ("broken", Outcome.TRANSIENT, False, None),
        ("missing", Outcome.PERMANENT, False, None),
        ("redirect", Outcome.PERMANENT, False, None),
        ("huge", Outcome.SENT, False, None),
    ],
)
async def test_status_table(
    receiver: Receiver, path: str, outcome: Outcome, disable: bool, retry_after: float | None
) -> None:
    channel = WebhookChannel(LOOPBACK)
    try:
        result = await channel.send(outbound("d-2", receiver.base + path, new_secret()))
    finally:
        await channel.close()
    assert (result.outcome, result.disable_address, result.retry_after_seconds) == (
        outcome,
        disable,
        retry_after,
    )
    if path == "redirect":
        assert len(receiver.requests) == 1  # the redirect was not followed


async def test_a_stalled_receiver_is_a_transient_timeout(receiver: Receiver) -> None:
    channel = WebhookChannel(LOOPBACK, total_timeout=0.3, read_timeout=0.3)
    try:
        result = await channel.send(outbound("d-3", receiver.base + "stall", new_secret()))
    finally:
        await channel.close()
    assert (result.outcome, result.detail) == (Outcome.TRANSIENT, "timed out")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "ftp://127.0.0.1/x",
    ],
)
async def test_forbidden_destinations_are_refused_at_connect_time(url: str) -> None:
    channel = WebhookChannel(allowed=())
    try:
        result = await channel.send(outbound("d-4", url, new_secret()))
    finally:
        await channel.close()
    assert result.outcome is Outcome.PERMANENT
    assert "forbidden_destination" in result.detail or "unsupported_scheme" in result.detail


ALLOW_SETTING = "webhook.allowed_networks (DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS)"


async def test_a_refusal_names_the_setting_that_would_allow_the_destination() -> None:
    with pytest.raises(DestinationRejected) as rejected:
        await check_webhook_url("http://127.0.0.1:9/hook", allowed=())
    assert str(rejected.value) == (
        "127.0.0.1 is loopback, private, link-local or reserved; to send there, allow its "
        f"network in {ALLOW_SETTING}"
    )
    channel = WebhookChannel(allowed=())
    try:
        for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook"):
            result = await channel.send(outbound("d-9", url, new_secret()))
            assert result.outcome is Outcome.PERMANENT
            assert result.detail.endswith(f"to send there, allow its network in {ALLOW_SETTING}")
    finally:
        await channel.close()


DISGUISED_LOOPBACK = [
    "１２７.０.０.１",  # noqa: RUF001 - fullwidth digits
    "①②⑦.0.0.1",  # circled digits
    "𝟏𝟐𝟕.𝟎.𝟎.𝟏",  # noqa: RUF001 - mathematical bold digits
    "١٢٧.٠.٠.١",  # noqa: RUF001 - Arabic-Indic digits
    "१२७.०.०.१",  # noqa: RUF001 - Devanagari digits
    "１２７。０。０。１",  # noqa: RUF001 - fullwidth digits, ideographic full stops
    "127.0.0.1.",  # a trailing dot
    "[64:ff9b::127.0.0.1]",  # NAT64, the well-known prefix
    "[64:ff9b:1::127.0.0.1]",  # NAT64, the local-use prefix
    "[64:ff9b:1::8.8.8.8]",  # the local-use prefix is not public whatever it wraps
    "[::127.0.0.1]",  # IPv4-compatible
    "[::ffff:0:127.0.0.1]",  # IPv4-translated
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[2002:7f00:1::]",  # 6to4
    "[fec0::1]",  # site-local
    "[fec0::127.0.0.1]",
]
"""Hosts that reach (or could reach) this machine or an internal network, spelled so that a
check of the URL's text alone does not see it."""


@pytest.mark.parametrize("host", DISGUISED_LOOPBACK)
async def test_disguised_internal_hosts_are_refused_when_saved(
    receiver: Receiver, host: str
) -> None:
    with pytest.raises(DestinationRejected) as rejected:
        await check_webhook_url(f"http://{host}:{receiver.port}/hook/ok", allowed=())
    assert rejected.value.code == "forbidden_destination"


@pytest.mark.parametrize("host", DISGUISED_LOOPBACK)
async def test_disguised_internal_hosts_are_refused_at_connect_time(
    receiver: Receiver, host: str
) -> None:
    url = f"http://{host}:{receiver.port}/hook/ok"
    channel = WebhookChannel(allowed=())
    try:
        result = await channel.send(outbound("d-8", url, new_secret()))
    finally:
        await channel.close()
    assert (result.outcome, result.detail.split(":")[0]) == (
        Outcome.PERMANENT,
        "forbidden_destination",
    )
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("64:ff9b::8.8.8.8", True),  # NAT64 to a public address
        ("2002:808:808::1", True),  # 6to4 of a public address
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b::169.254.169.254", False),
        ("64:ff9b:1::8.8.8.8", False),
        ("::8.8.8.8", False),
        ("::ffff:8.8.8.8", False),
        ("::ffff:0:8.8.8.8", False),
        ("2002:a00:1::1", False),
        ("fec0::1", False),
        ("ff0e::1", False),
        ("224.0.0.1", False),
        ("192.0.0.8", False),
        ("3fff::1", False),
        ("100::1", False),
    ],
)
def test_the_outer_and_any_embedded_ipv4_address_must_both_be_public(
    address: str, allowed: bool
) -> None:
    assert address_allowed(ipaddress.ip_address(address), ()) is allowed


def test_an_allowed_network_admits_its_addresses_however_wrapped() -> None:
    loopback = parse_networks(["127.0.0.1/32"])
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "64:ff9b::127.0.0.1"):
        assert address_allowed(ipaddress.ip_address(address), loopback)
    assert not address_allowed(ipaddress.ip_address("64:ff9b::127.0.0.2"), loopback)


@pytest.mark.parametrize("url", ["http://a..b/hook", "http://" + "a" * 64 + ".example/hook"])
async def test_a_host_name_idna_refuses_is_an_invalid_url_not_a_crash(url: str) -> None:
    """Found by tests/test_fuzz.py: the UnicodeError of the IDNA codec escaped."""
    with pytest.raises(DestinationRejected) as caught:
        await check_webhook_url(url, ())
    assert caught.value.code == "invalid_url"
    channel = WebhookChannel(allowed=())
    try:
        result = await channel.send(outbound("d-6", url, new_secret()))
    finally:
        await channel.close()
    assert result.outcome is Outcome.PERMANENT


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://hooks.example/a/1?x=1#f", "https://hooks.example"),
        ("https://hooks.example?x=/@other", "https://hooks.example"),
        ("https://u:p@hooks.example:8443/a", "https://u:p@hooks.example:8443"),
        ("https://hooks.example", "https://hooks.example"),
        ("https://hooks.example/a b", "https://hooks.example/a b"),
        ("https://hooks.example/\u00e9", "https://hooks.example/\u00e9"),
        ("https://hooks.example/\ud800", "https://hooks.example/\ud800"),
        ("https:/hooks.example/a", "https:/hooks.example/a"),
    ],
)
def test_a_verdict_is_kept_per_authority_when_the_rest_cannot_change_it(url: str, key: str) -> None:
    assert verdict_key(url) == key


async def test_many_paths_on_one_host_share_its_verdict(receiver: Receiver) -> None:
    channel = WebhookChannel(LOOPBACK)
    refusing = WebhookChannel(allowed=())
    try:
        for n in range(3):
            sent = await channel.send(outbound(f"d-p{n}", f"{receiver.base}ok?n={n}", new_secret()))
            assert sent.outcome is Outcome.SENT
            refused = await refusing.send(outbound(f"d-r{n}", f"{receiver.base}{n}", new_secret()))
            assert refused.detail.startswith("forbidden_destination")
        await channel.send(outbound("d-odd", receiver.base + "o k", new_secret()))
    finally:
        await channel.close()
        await refusing.close()
    assert len(channel._verdicts) == 2  # the host, and the URL with a space judged whole
    assert len(refusing._verdicts) == 1
    assert len(receiver.requests) == 4


async def test_a_cookie_one_endpoint_sets_never_reaches_another(receiver: Receiver) -> None:
    # Two stakeholders' endpoints on one host: what the first answers must not travel to the
    # second (nor back to the first), so the channel keeps no cookies at all. By host name:
    # cookies from an IP address are never kept anyway.
    by_name = receiver.base.replace("127.0.0.1", "localhost")
    channel = WebhookChannel(LOOPBACK)
    try:
        for name in ("cookie", "ok", "cookie"):
            result = await channel.send(outbound(f"d-{name}", by_name + name, new_secret()))
            assert result.outcome is Outcome.SENT
    finally:
        await channel.close()
    assert [headers.get("Cookie") for headers, _ in receiver.requests] == [None, None, None]


async def test_a_refused_connection_is_transient() -> None:
    channel = WebhookChannel(LOOPBACK, connect_timeout=1)
    try:
        result = await channel.send(outbound("d-5", "http://127.0.0.1:9/hook", new_secret()))
    finally:
        await channel.close()
    assert result.outcome is Outcome.TRANSIENT


@pytest.mark.parametrize("secret", [None, ""])
async def test_a_contact_without_a_secret_fails_permanently_unsent(
    receiver: Receiver, secret: str | None
) -> None:
    channel = WebhookChannel(LOOPBACK)
    try:
        result = await channel.send(outbound("d-6", receiver.base + "ok", secret))
    finally:
        await channel.close()
    assert (result.outcome, result.detail) == (
        Outcome.PERMANENT,
        "the webhook contact has no signing secret",
    )
    assert result.content_sha256 is None
    assert receiver.requests == []


def test_the_host_is_the_urls_network_location() -> None:
    channel = WebhookChannel(LOOPBACK)
    message = outbound("d-7", "https://Hooks.Example.org:8443/in?x=1", new_secret())
    assert channel.host(message) == "hooks.example.org:8443"


@pytest.mark.parametrize("cleared", [False, True])
async def test_a_supervisors_notice_carries_the_alert_only_when_cleared(
    receiver: Receiver, cleared: bool
) -> None:
    document = ALERT | {"handling": {"tlp": "RED", "caveats": [], "tlp_defaulted": False}}
    notice = {"about": "Night desk", "afterSeconds": 600, "cleared": cleared}
    message = outbound("n-1", receiver.base + "ok", new_secret(), document, notice)
    handling = {"tlp": "RED", "caveats": []}
    alert = public_alert(document) if cleared else {"id": ALERT["id"], "handling": handling}
    expected = {
        "version": "1",
        "type": "unacknowledged",
        "deliveryId": "n-1",
        "notAcknowledgedBy": "Night desk",
        "afterSeconds": 600,
        "contentWithheld": not cleared,
        "alert": alert,
    }
    channel = WebhookChannel(LOOPBACK)
    try:
        assert channel.body(message) == notice_body(message)
        assert assert_contract(notice_body(message)) == expected
        result = await channel.send(message)
    finally:
        await channel.close()
    assert result.outcome is Outcome.SENT
    [(headers, received)] = receiver.requests
    assert received == notice_body(message)
    assert headers["webhook-id"] == "n-1"
    assert result.content_sha256 == hashlib.sha256(received).hexdigest()
    assert (b"Flash flood" in received) is cleared


@pytest.mark.parametrize("wide", ["0.0.0.0/0", "128.0.0.0/1", "8.0.0.0/7", "::/0", "fc00::/6"])
def test_an_allowed_network_wider_than_any_private_block_is_refused(wide: str) -> None:
    # public space needs no allowing: such a setting would only open loopback, link-local
    # (the cloud metadata address) and the rest to anyone who may save a webhook URL
    with pytest.raises(ConfigError, match="wider than"):
        load_settings({"DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS": wide})
    narrow = load_settings({"DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8,fc00::/7"})
    assert narrow.webhook.allowed_networks == ("10.0.0.0/8", "fc00::/7")
