"""SMS through the Twilio REST API (the official SDK on one pooled aiohttp session). The text
an alert becomes is `channels.smstext`'s; what Twilio's webhooks say, `channels.smsinbound`'s.

Status mapping: accepted is sent (provider_id is the message SID); 429 or 20429 and 5xx are
transient (honouring Retry-After); timeouts, connection errors and a refused login (401 or
20003: our credentials, not the row's number) transient; 21610 (the
recipient replied STOP) permanent with detail "opted_out: ..."; other 4xx permanent, and
21211/21614 (not a valid mobile number) also disable the address; a text that cannot be
composed (an ack link too long for two segments) permanent, before anything is sent, while an
alert's own web link too long to share the text is left out. Twilio has no idempotency key
for messages, so a retried timeout may deliver twice. Sends are paced to
`sms.messages_per_second`, and all share one circuit breaker ("twilio"). Without a Twilio
account texts go to the outbox (channels/outbox.py); with SMS switched off
(`sms.transport = "off"`) every send fails permanently, so SMS rows fall back to the next
channel.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from aiolimiter import AsyncLimiter
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from channels.base import ChannelName, OutboundMessage, Outcome, SendResult, with_content_hash
from channels.smstext import sms_text

_BAD_NUMBER = {21211: "invalid 'To' number", 21614: "'To' is not a mobile number"}
_UNDELIVERABLE = frozenset({30003, 30004, 30005, 30006})
TWILIO_HOST = "twilio"
SWITCHED_OFF = 'sms is switched off (sms.transport = "off")'
_response_headers: ContextVar[list[Mapping[str, str]] | None] = ContextVar(
    "twilio_response_headers", default=None
)


@dataclass(frozen=True)
class TwilioConfig:
    """Twilio credentials and sender; `api_base` ("http://127.0.0.1:PORT") replaces the
    *.twilio.com hosts, for tests."""

    account_sid: str
    auth_token: str
    messaging_service_sid: str | None = None
    from_number: str | None = None
    api_base: str | None = None
    status_callback_url: str | None = None
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not (self.messaging_service_sid or self.from_number):
            raise ValueError("either messaging_service_sid or from_number is required")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")


def rewrite_url(url: str, api_base: str | None) -> str:
    """`url` with a *.twilio.com scheme and host replaced by `api_base`'s."""
    parts, host = urlsplit(url), urlsplit(url).hostname or ""
    if api_base is None or not (host == "twilio.com" or host.endswith(".twilio.com")):
        return url
    base = urlsplit(api_base)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))


FORM = "application/x-www-form-urlencoded"


class TwilioHttp(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client: session opened lazily on the running loop, URLs rewritten to
    `api_base`, and each response's headers kept for the caller's context."""

    def __init__(self, api_base: str | None = None) -> None:
        super().__init__(pool_connections=False)
        self.api_base = api_base
        self.session: aiohttp.ClientSession | None = None

    async def request(self, method: str, url: str, **kwargs: Any) -> Response:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession()
        if auth := kwargs.pop("auth", None):  # aiohttp 3.14 deprecates its BasicAuth
            login = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": f"Basic {login}"}
        if isinstance(kwargs.get("data"), dict):
            # Encoded as aiohttp encodes a dict of fields, but without the FormData it would
            # build for it, whose unused multipart writer (a random boundary checked by a
            # regular expression) cost about 15 % of an SMS fan-out.
            kwargs["data"] = urlencode(kwargs["data"], doseq=True).encode()
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Content-Type": FORM}
        response: Response = await super().request(
            method, rewrite_url(url, self.api_base), **kwargs
        )
        seen = _response_headers.get()
        if seen is not None and response.headers is not None:
            seen.append(response.headers)
        return response

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _retry_after(headers: list[Mapping[str, str]]) -> float | None:
    value = (headers[-1].get("Retry-After") or "").strip() if headers else ""
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _classify(status: int, code: int | None, retry_after: float | None) -> SendResult:
    detail = f"HTTP {status} Twilio {code}"
    if status == 429 or code == 20429:
        return SendResult(Outcome.TRANSIENT, detail, retry_after_seconds=retry_after)
    if code == 21610:
        return SendResult(
            Outcome.PERMANENT, f"opted_out: {detail} (recipient replied STOP)", opted_out=True
        )
    if code in _BAD_NUMBER:
        return SendResult(
            Outcome.PERMANENT, f"{detail} ({_BAD_NUMBER[code]})", disable_address=True
        )
    if code in _UNDELIVERABLE:
        return SendResult(Outcome.PERMANENT, f"{detail} (undeliverable)")
    # As for the email relay's login: refused credentials say nothing about the row's number.
    # Permanent, a rotated token would fail every row of a fan-out over to its next channel;
    # transient, the rows wait behind the breaker until an operator fixes the settings.
    if status == 401 or code == 20003:
        return SendResult(Outcome.TRANSIENT, f"{detail} (twilio refused the account's credentials)")
    if status >= 500:
        return SendResult(Outcome.TRANSIENT, detail, retry_after_seconds=retry_after)
    return SendResult(Outcome.PERMANENT, detail)


class SmsChannel:
    """Composes each delivery's text and sends it with `messages.create_async` within
    `timeout_seconds`, at most `messages_per_second` (None: unpaced)."""

    name = ChannelName.SMS.value

    def __init__(self, config: TwilioConfig, *, messages_per_second: float | None = None) -> None:
        self.config = config
        self.http = TwilioHttp(config.api_base)
        self.client = Client(config.account_sid, config.auth_token, http_client=self.http)
        self.limiter: AsyncLimiter | None = None
        if messages_per_second is not None:
            if messages_per_second >= 1:
                self.limiter = AsyncLimiter(messages_per_second, 1.0)
            else:
                self.limiter = AsyncLimiter(1, 1.0 / messages_per_second)

    def host(self, message: OutboundMessage) -> str:
        return TWILIO_HOST

    @staticmethod
    def compose(message: OutboundMessage) -> str:
        """The SMS for one delivery: GSM-7, at most two segments, marking first and the ack
        code and link whole; restricted alerts carry only marking, headline, ack code and
        link. ValueError when the marking, code and link alone do not fit."""
        return sms_text(message.content(), message.rendering)

    async def send(self, message: OutboundMessage) -> SendResult:
        """Compose, wait for the pace, send; the result carries the hash of the text when it
        was accepted."""
        try:
            text = self.compose(message)
        except ValueError as error:
            return SendResult(Outcome.PERMANENT, f"cannot compose the text: {error}")
        if self.limiter is None:
            result = await self._create(message.address, text)
        else:
            async with self.limiter:
                result = await self._create(message.address, text)
        return with_content_hash(result, text.encode())

    async def _create(self, to: str, body: str) -> SendResult:
        config = self.config
        options: dict[str, str] = {}
        if config.messaging_service_sid:
            options["messaging_service_sid"] = config.messaging_service_sid
        else:
            options["from_"] = config.from_number or ""
        if config.status_callback_url:
            options["status_callback"] = config.status_callback_url
        seen: list[Mapping[str, str]] = []
        token = _response_headers.set(seen)
        try:
            async with asyncio.timeout(config.timeout_seconds):
                created = await self.client.messages.create_async(to=to, body=body, **options)
        except TimeoutError:
            return SendResult(Outcome.TRANSIENT, "timed out")
        except (TwilioRestException, TwilioServiceException) as error:
            return _classify(int(error.status), error.code, _retry_after(seen))
        except aiohttp.ClientError as error:
            return SendResult(Outcome.TRANSIENT, f"connection failed: {type(error).__name__}")
        finally:
            _response_headers.reset(token)
        return SendResult(Outcome.SENT, f"accepted: {created.status}", provider_id=str(created.sid))

    async def close(self) -> None:
        await self.http.close()


class SmsOff:
    """The SMS channel of a service with SMS switched off: every delivery fails permanently,
    so its subscription falls back to the next channel."""

    name = ChannelName.SMS.value

    def host(self, message: OutboundMessage) -> str:
        return TWILIO_HOST

    async def send(self, message: OutboundMessage) -> SendResult:
        return SendResult(Outcome.PERMANENT, SWITCHED_OFF)

    async def close(self) -> None:
        return None
