"""Webhook delivery, signed per the Standard Webhooks specification.

Each request carries `webhook-id` (the ledger row id, so it is the same on every retry and
receivers can deduplicate), `webhook-timestamp` and `webhook-signature`
(`v1,` + base64 HMAC-SHA256 over `id.timestamp.body`, keyed with the endpoint's `whsec_`
secret). Redirects are not followed, cookies are not kept, the response read is capped, and
the address actually dialled is checked against private and internal ranges at connect time,
so a DNS answer that changed since the URL was saved gains nothing.

The body is the public, versioned one of `channels/webhookbody.py` (`schemas/webhook-v1.json`):
an alert (`"type": "alert"`, with `ack` {token, url} when an acknowledgment is owed) or a
supervisor's notice (`"type": "unacknowledged"`); the alert's public JSON is made once per
alert and entitlement and shared by its deliveries.

Status mapping: 2xx sent; 410 permanent and the endpoint is disabled; 429 and 5xx transient
(honouring Retry-After); timeouts and connection errors transient; other 3xx/4xx permanent;
a contact without a signing secret permanent, before anything is sent.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from channels.base import ChannelName, OutboundMessage, Outcome, SendResult, with_content_hash
from channels.destinations import (
    ALLOW_HINT,
    IPNetwork,
    address_allowed,
    check_url_shape,
    forbidden,
)
from channels.errors import DestinationRejected, ForbiddenAddress
from channels.webhookbody import alert_head, dumps, notice_body, public_alert, with_alert

VERDICT_CACHE_SIZE = 100_000
ALERT_CACHE_SIZE = 64
SECRET_PREFIX = "whsec_"  # noqa: S105 - the specification's prefix, not a secret


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one request."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()


def new_secret() -> str:
    """A fresh endpoint secret: 32 random bytes, base64, with the `whsec_` prefix."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class GuardedResolver(AbstractResolver):
    """Resolves like the default resolver, then keeps only addresses webhooks may reach."""

    def __init__(self, allowed: Sequence[IPNetwork]) -> None:
        self.allowed = tuple(allowed)
        self.inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        kept = [
            a for a in answers if address_allowed(ipaddress.ip_address(a["host"]), self.allowed)
        ]
        if not kept:
            message = f"{host} resolves only to forbidden addresses; to send there, {ALLOW_HINT}"
            raise ForbiddenAddress(message)
        return kept

    async def close(self) -> None:
        await self.inner.close()


@functools.lru_cache(maxsize=65536)
def _netloc(url: str) -> str:
    return urlsplit(url).netloc.lower()


def verdict_key(url: str) -> str:
    """What a destination's verdict depends on: the URL up to the end of its authority
    (scheme, credentials, host, port), when the rest is printable ASCII and so can change
    neither how the authority is parsed nor whether the URL parses at all; else the whole
    URL. A fan-out to many paths on one host then checks the host once."""
    start = url.find("://")
    if start < 0:
        return url
    ends = [i for i in (url.find(c, start + 3) for c in "/?#") if i >= 0]
    if not ends:
        return url
    rest = url[min(ends) :]
    if not (rest.isascii() and rest.isprintable()) or " " in rest:
        return url
    return url[: min(ends)]


def _retry_after(value: str | None) -> float | None:
    """The seconds a `Retry-After` value asks for (delta-seconds or an HTTP date), or None
    when it is missing or unreadable. However long it is, the retry schedule caps it."""
    if not value:
        return None
    value = value.strip()
    # ASCII only: str.isdigit() also accepts digits such as "²" that float() rejects.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


class WebhookChannel:
    """Composes each delivery's JSON and sends it signed over a pooled aiohttp session; the
    destination host is the URL's."""

    name = ChannelName.WEBHOOK.value
    max_response_bytes = 64 * 1024

    def __init__(
        self,
        allowed: Sequence[IPNetwork],
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        total_timeout: float = 30.0,
        pool_size: int = 100,
    ) -> None:
        self.allowed = tuple(allowed)
        self.timeout = aiohttp.ClientTimeout(
            total=total_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self.pool_size = pool_size
        self._verdicts: dict[str, DestinationRejected | None] = {}
        self._alert_json: dict[tuple[str, bool], bytes] = {}

    def host(self, message: OutboundMessage) -> str:
        return _netloc(str(message.address))

    def body(self, message: OutboundMessage) -> bytes:
        """Exactly `webhookbody.alert_body(message)` (or `notice_body`), with the alert
        converted and serialized once per alert and entitlement (`message.document_key`), not
        once per delivery."""
        if message.notice is not None:
            return notice_body(message)
        key = message.document_key
        alert_json = self._alert_json.get(key)
        if alert_json is None:
            if len(self._alert_json) >= ALERT_CACHE_SIZE:
                self._alert_json.clear()
            alert_json = dumps(public_alert(message.document))
            self._alert_json[key] = alert_json
        return with_alert(alert_head(message), alert_json)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.pool_size, resolver=GuardedResolver(self.allowed)
            )
            # No cookie jar: a cookie one receiver sets would otherwise go to every endpoint
            # on its host, other stakeholders' among them.
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    def _check_destination(self, url: str) -> None:
        # A fan-out sends many rows to few hosts: remember each one's verdict (the resolver
        # still checks the addresses that host names resolve to on every connection).
        key = verdict_key(url)
        if key not in self._verdicts:
            if len(self._verdicts) >= VERDICT_CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[key] = self._verdict(url)
        rejected = self._verdicts[key]
        if rejected is not None:
            raise rejected

    def _verdict(self, url: str) -> DestinationRejected | None:
        try:
            destination = check_url_shape(url)
        except DestinationRejected as rejected:
            return rejected
        # aiohttp does not resolve IP literals, so the resolver never sees them: check every
        # address the host spells here (host names are checked by the resolver).
        for address in destination.spelled_addresses():
            if not address_allowed(address, self.allowed):
                return forbidden(destination, address)
        return None

    async def send(self, message: OutboundMessage) -> SendResult:
        """POST the delivery's JSON, signed with the contact's secret; the result carries the
        hash of the body when it was accepted."""
        if not message.secret:
            return SendResult(Outcome.PERMANENT, "the webhook contact has no signing secret")
        body = self.body(message)
        result = await self._post(message.delivery_id, message.address, message.secret, body)
        return with_content_hash(result, body)

    async def _post(self, delivery_id: str, url: str, secret: str, body: bytes) -> SendResult:
        try:
            self._check_destination(url)
        except DestinationRejected as rejected:
            return SendResult(Outcome.PERMANENT, f"{rejected.code}: {rejected}")
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, delivery_id, timestamp, body),
        }
        try:
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(self.max_response_bytes)
                return self._classify(response.status, response.headers)
        except TimeoutError:
            return SendResult(Outcome.TRANSIENT, "timed out")
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, ForbiddenAddress):
                return SendResult(Outcome.PERMANENT, f"forbidden_destination: {error.os_error}")
            return SendResult(Outcome.TRANSIENT, f"connection failed: {type(error).__name__}")
        except aiohttp.ClientError as error:
            return SendResult(Outcome.TRANSIENT, f"connection failed: {type(error).__name__}")

    @staticmethod
    def _classify(status: int, headers: Any) -> SendResult:
        detail = f"HTTP {status}"
        if 200 <= status < 300:
            return SendResult(Outcome.SENT, detail, provider_id=str(status))
        if status == 410:
            return SendResult(Outcome.PERMANENT, detail + " (endpoint gone)", disable_address=True)
        if status == 429 or status >= 500:
            retry_after = _retry_after(headers.get("Retry-After"))
            return SendResult(Outcome.TRANSIENT, detail, retry_after_seconds=retry_after)
        return SendResult(Outcome.PERMANENT, detail)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
