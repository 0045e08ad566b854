"""SMS through the Twilio REST API (the official SDK on one pooled aiohttp session), the text
an alert becomes in at most two GSM-7 segments, and pure helpers for Twilio's webhooks.

Status mapping: accepted is sent (provider_id is the message SID); 429 or 20429 and 5xx are
transient (honouring Retry-After); timeouts and connection errors transient; 21610 (the
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
import re
import time
import unicodedata
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
from aiolimiter import AsyncLimiter
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from channels.base import ChannelName, OutboundMessage, Outcome, SendResult, with_content_hash
from channels.content import AlertContent, Rendering

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")  # each sent as escape + character: two septets
_SUBSTITUTES = str.maketrans(
    dict.fromkeys("\u2018\u2019\u201a\u201b`\u00b4", "'")
    | dict.fromkeys("\u201c\u201d\u201e\u00ab\u00bb", '"')
    | dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2212", "-")
    | {"\u2026": "...", "\u2022": "*", "\u00b7": "."}
)
_URL_SAFE = ":/?#[]@!$&'()*+,;=%-._~"  # everything else (non-ASCII, `, {, |) is escaped
_BAD_NUMBER = {21211: "invalid 'To' number", 21614: "'To' is not a mobile number"}
_UNDELIVERABLE = frozenset({30003, 30004, 30005, 30006})
TWILIO_HOST = "twilio"
SWITCHED_OFF = 'sms is switched off (sms.transport = "off")'
_response_headers: ContextVar[list[Mapping[str, str]] | None] = ContextVar(
    "twilio_response_headers", default=None
)


def gsm7_septets(text: str) -> int | None:
    """Septets `text` takes in the GSM-7 alphabet, or None when it cannot be encoded."""
    total = 0
    for char in text:
        if char not in _GSM_BASIC and char not in _GSM_EXTENSION:
            return None
        total += 2 if char in _GSM_EXTENSION else 1
    return total


def segments(text: str) -> int:
    """SMS segments `text` is sent in: GSM-7 (160, or 153 per part) when it encodes, else UCS-2
    (70, or 67 per part); an escape pair or surrogate pair is never split across parts."""
    gsm = gsm7_septets(text) is not None
    sizes = [
        (2 if c in _GSM_EXTENSION else 1) if gsm else len(c.encode("utf-16-le")) // 2 for c in text
    ]
    if sum(sizes) <= (160 if gsm else 70):
        return 1
    count, used, limit = 1, 0, 153 if gsm else 67
    for size in sizes:
        if used + size > limit:
            count, used = count + 1, 0
        used += size
    return count


def to_gsm7(text: str) -> str:
    """`text` on one line in GSM-7: look-alikes replaced, accents dropped, the rest "?"."""
    out = []
    for char in " ".join(text.split()).translate(_SUBSTITUTES):
        if char in _GSM_BASIC or char in _GSM_EXTENSION:
            out.append(char)
            continue
        decomposed = unicodedata.normalize("NFKD", char)
        plain = "".join(c for c in decomposed if c in _GSM_BASIC or c in _GSM_EXTENSION)
        out.append(plain or "?")
    return "".join(out)


def _fit(text: str, budget: int) -> str:
    """GSM-7 `text`, or as much of its start as fits in `budget` septets with "..."."""
    if (gsm7_septets(text) or 0) <= budget:
        return text
    kept, used = [], 3
    for char in text:
        used += 2 if char in _GSM_EXTENSION else 1
        if used > budget:
            break
        kept.append(char)
    start = "".join(kept)
    if (space := start.rfind(" ", max(0, len(start) - 20))) > 0:
        start = start[:space]  # end on a word when one ends nearby
    return start.rstrip() + "..." if start.strip() else ""


WITHHELD_NOTE = "Personal data withheld (no PII entitlement)"


WEB_LINK_MAX_SEPTETS = 153
"""The alert's own `web` link takes at most one segment's worth of the two; a longer one is
left out (a cut link leads nowhere), so the alert's words always keep their room."""


def _link(content: AlertContent, rendering: Rendering) -> str:
    """The link the text ends with: the ack link or portal, else (shareable alerts only) the
    alert's web link if it is short enough."""
    ours = rendering.ack_url or rendering.portal_url
    if ours:
        return quote(ours, safe=_URL_SAFE)
    if content.restricted or not content.web:
        return ""
    web = quote(content.web, safe=_URL_SAFE)
    return web if (gsm7_septets(web) or 0) <= WEB_LINK_MAX_SEPTETS else ""


def _compose(content: AlertContent, rendering: Rendering, budget: int) -> str:
    ack = f"Reply ACK {to_gsm7(rendering.ack_code)}" if rendering.ack_code else ""
    tail = [part for part in (ack, _link(content, rendering)) if part]
    parts = [to_gsm7(" ".join(filter(None, (content.status_label, content.marking))))]
    withheld = WITHHELD_NOTE if content.withheld else ""
    if content.restricted:
        middle = [content.headline, withheld]
    else:
        headline = content.headline if content.headline != content.event else ""
        areas = "Area: " + ", ".join(content.areas) if any(content.areas) else ""
        middle = [
            f"{content.severity} {content.event}",
            headline,
            withheld,
            areas,
            content.instruction,
        ]
    room = budget - (gsm7_septets("\n".join(parts + tail)) or 0)
    if room < 0:
        raise ValueError("the marking, ack code and link alone exceed two SMS segments")
    for text in middle:
        piece = _fit(to_gsm7(text), room - 1)  # one septet for the newline before it
        if piece:
            parts.append(piece)
            room -= (gsm7_septets(piece) or 0) + 1
    return "\n".join(parts + tail)


def _text(content: AlertContent, rendering: Rendering) -> str:
    text = _compose(content, rendering, 306)
    # 305 septets always fit two parts even when an escape pair would straddle the boundary
    return text if segments(text) <= 2 else _compose(content, rendering, 305)


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
        return _text(message.content(), message.rendering)

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


def valid_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str
) -> bool:
    """Whether `X-Twilio-Signature` is Twilio's for this URL and form (HMAC-SHA1, auth token)."""
    return bool(signature) and bool(RequestValidator(auth_token).validate(url, params, signature))


class Keyword(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


_KEYWORDS = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"), Keyword.STOP),
    **dict.fromkeys(("REVOKE", "OPTOUT"), Keyword.STOP),
    **dict.fromkeys(("START", "YES", "UNSTOP"), Keyword.START),
    **dict.fromkeys(("HELP", "INFO"), Keyword.HELP),
}


def opt_keyword(body: str) -> Keyword | None:
    """The opt-out, opt-in or help keyword an inbound SMS consists of, if it is one."""
    return _KEYWORDS.get(body.strip().upper())


_ACK_REPLY = re.compile(
    r"(?:(?:ACK|ACKNOWLEDGE|ACKNOWLEDGED|CONFIRM|CONFIRMED|RECEIVED|YES|Y|OK|1)"
    r"(?:\s*#?\s*(?P<code>\d{4}|\d{6}))?|#?(?P<bare>\d{4}|\d{6}))[.!]*"
)


@dataclass(frozen=True, slots=True)
class AckReply:
    """An inbound text that acknowledges: with the code it quotes, or None for "the newest"."""

    code: str | None


def ack_reply(body: str) -> AckReply | None:
    """The acknowledgment an inbound SMS makes, if it is one: `ACK`, `ACK 4821`, `1`, `YES`,
    `4821` (case and surrounding spaces ignored)."""
    match = _ACK_REPLY.fullmatch(body.strip().upper())
    if match is None:
        return None
    return AckReply(match["code"] or match["bare"])


_FINAL_STATES = {"delivered": "delivered", "undelivered": "undelivered", "failed": "failed"}


def status_update(params: Mapping[str, str]) -> tuple[str, str, str | None] | None:
    """(MessageSid, final state, ErrorCode) from a status callback form; None if not final."""
    sid = params.get("MessageSid") or params.get("SmsSid")
    state = _FINAL_STATES.get(params.get("MessageStatus") or params.get("SmsStatus") or "")
    if not sid or state is None:
        return None
    return sid, state, params.get("ErrorCode") or None
