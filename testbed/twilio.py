"""A Twilio-compatible fake of the Messages REST API on loopback, for driving the real SDK.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` checks HTTP Basic auth, the account in
the path and the required form fields, and answers 201 with a Message resource like Twilio's.
Failures are scripted per test with `fail_next` / `hang_next` (first in, first used), or by
recipient number (Twilio's magic test numbers where one exists):

    +15005550001  400 / 21211 invalid 'To'        +15005550009  400 / 21614 not a mobile
    +15005550004  400 / 21610 opted out (STOP)     +15005550429  429 / 20429, Retry-After: 7
    +15005550500  500 / 20500                      +15005550999  hangs until the fake closes

It also plays Twilio's side of the webhooks: `send_status_callback` posts a signed status
callback to the URL a message was created with, `signed_form` signs any form for a URL. With
`report_at_once` set, each created message's status callback is posted before the create is
answered (a fast network can make Twilio's callback overtake its API response), or, with
`report_before_answer` off, at the moment it is answered.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from channels.smstext import segments

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-auth-token-0123456789abcdef"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
FROM_NUMBER = "+15005550006"

INVALID_NUMBER = "+15005550001"
OPTED_OUT_NUMBER = "+15005550004"
NOT_MOBILE_NUMBER = "+15005550009"
RATE_LIMITED_NUMBER = "+15005550429"
BROKEN_NUMBER = "+15005550500"
HANGING_NUMBER = "+15005550999"


@dataclass(frozen=True)
class Failure:
    """One scripted answer instead of a created message."""

    status: int
    code: int | None
    message: str = "scripted failure"
    retry_after: str | None = None
    hang: bool = False


RATE_LIMITED = Failure(429, 20429, "Too Many Requests", retry_after="7")
BY_NUMBER = {
    INVALID_NUMBER: Failure(400, 21211, f"The 'To' number {INVALID_NUMBER} is not valid."),
    NOT_MOBILE_NUMBER: Failure(400, 21614, f"'To' number {NOT_MOBILE_NUMBER} is not mobile."),
    OPTED_OUT_NUMBER: Failure(400, 21610, "Attempt to send to unsubscribed recipient"),
    RATE_LIMITED_NUMBER: RATE_LIMITED,
    BROKEN_NUMBER: Failure(500, 20500, "Internal Server Error"),
    HANGING_NUMBER: Failure(0, None, hang=True),
}


def error_body(status: int, code: int | None, message: str) -> dict[str, Any]:
    """An error document shaped like Twilio's."""
    more_info = f"https://www.twilio.com/docs/errors/{code}" if code else None
    return {"code": code, "message": message, "more_info": more_info, "status": status}


@dataclass
class TwilioFake:
    """The fake API; `base_url` is what `TwilioConfig.api_base` should be."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    base_url: str = ""
    attempts: list[dict[str, str]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    """Each create's Content-Type, as sent."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    callbacks: dict[str, str] = field(default_factory=dict)
    hung: int = 0
    script: deque[Failure] = field(default_factory=deque)
    report_at_once: tuple[str, int | None] | None = None
    """(MessageStatus, ErrorCode) to call back with as each create is answered."""
    report_before_answer: bool = True
    reported: list[int] = field(default_factory=list)
    """The receiver's HTTP status for each callback `report_at_once` posted."""
    _reporting: set[asyncio.Task[None]] = field(default_factory=set)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        code: int | None = None,
        message: str = "scripted failure",
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `n` authenticated requests with this error."""
        self.script.extend([Failure(status, code, message, retry_after)] * n)

    def hang_next(self, n: int = 1) -> None:
        """Never answer the next `n` requests (until the fake closes)."""
        self.script.extend([Failure(0, None, hang=True)] * n)

    async def start(self) -> TwilioFake:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._create)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        self._release.set()
        for task in self._reporting:
            task.cancel()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> TwilioFake:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _authorized(self, request: web.Request) -> bool:
        expected = f"{self.account_sid}:{self.auth_token}".encode()
        given = request.headers.get("Authorization", "")
        return given == "Basic " + base64.b64encode(expected).decode() and (
            request.match_info["account"] == self.account_sid
        )

    @staticmethod
    def _error(failure: Failure) -> web.Response:
        headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
        body = error_body(failure.status, failure.code, failure.message)
        return web.json_response(body, status=failure.status, headers=headers)

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(Failure(401, 20003, "Authenticate"))
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.attempts.append(form)
        self.content_types.append(request.headers.get("Content-Type", ""))
        failure = self.script.popleft() if self.script else BY_NUMBER.get(form.get("To", ""))
        if failure is not None and failure.hang:
            self.hung += 1
            await self._release.wait()
        if failure is not None:
            return self._error(failure)
        missing = [
            Failure(400, 21604, "A 'To' phone number is required.") if "To" not in form else None,
            Failure(400, 21602, "Message body is required.") if "Body" not in form else None,
            Failure(400, 21603, "A 'From' phone number is required.")
            if not ("From" in form or "MessagingServiceSid" in form)
            else None,
        ]
        for problem in missing:
            if problem is not None:
                return self._error(problem)
        message = self._message(form)
        self.messages.append(message)
        if "StatusCallback" in form:
            self.callbacks[message["sid"]] = form["StatusCallback"]
            if self.report_at_once is not None:
                await self._report(message["sid"], self.report_at_once)
        return web.json_response(message, status=201)

    async def _report(self, sid: str, report: tuple[str, int | None]) -> None:
        async def post() -> None:
            self.reported.append(await self.send_status_callback(sid, *report))

        if self.report_before_answer:
            await post()
            return
        task = asyncio.create_task(post())
        self._reporting.add(task)
        task.add_done_callback(self._reporting.discard)

    def _message(self, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        service = form.get("MessagingServiceSid")
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": None if service else form.get("From"),
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": "0" if service else str(segments(form["Body"])),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": form["To"],
            "uri": f"{uri}.json",
        }

    def signed_form(self, url: str, params: dict[str, str]) -> dict[str, str]:
        """Headers Twilio would send with `params` posted to `url`."""
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        return {"X-Twilio-Signature": signature}

    def inbound_sms(
        self, url: str, *, from_: str, body: str, to: str = FROM_NUMBER
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(form, headers) of an inbound SMS webhook as Twilio would post it to `url`."""
        sid = "SM" + secrets.token_hex(16)
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "Body": body,
            "From": from_,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
        }
        return form, self.signed_form(url, form)

    async def send_status_callback(
        self, message_sid: str, status: str, error_code: int | None = None
    ) -> int:
        """Post a signed status callback to the StatusCallback `message_sid` was created with;
        the receiver's HTTP status."""
        message = next(m for m in self.messages if m["sid"] == message_sid)
        url = self.callbacks[message_sid]
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": message["from"] or FROM_NUMBER,
            "MessageSid": message_sid,
            "MessageStatus": status,
            "SmsSid": message_sid,
            "SmsStatus": status,
            "To": message["to"],
        }
        if message["messaging_service_sid"]:
            form["MessagingServiceSid"] = message["messaging_service_sid"]
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(url, data=form, headers=self.signed_form(url, form)) as r:
            await r.read()
            return r.status
