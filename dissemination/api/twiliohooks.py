"""Twilio's callbacks into the service, each signature-checked with Twilio's request
validator against the configured public URL (what Twilio signed), never the Host header:

- `POST /hooks/twilio/status`: message status callbacks move an SMS row from `sent` to
  `delivered`, or to `failed` when Twilio reports it undelivered or failed. Only forward: a
  late or repeated callback (the same MessageSid and MessageStatus again) changes nothing,
  and the first final status stands. A status that arrives before the send's outcome is
  recorded (Twilio's callback overtaking its API response, the row still `sending`) is kept
  and applied when the outcome is recorded, in the same transaction; one that matches no
  recorded send within a day is forgotten (`dissemination.store.rows`). Non-final statuses
  (`queued`, `sent`, ...) are answered and ignored.
- `POST /hooks/twilio/sms`: inbound messages. Replies such as `ACK`, `ACK 4821`, `1` or
  `YES` acknowledge: with a code, that alert; without, the newest unacknowledged alert texted
  to the number. A code issued to another number acknowledges nothing and is audited; so
  does a code that more than one alert texted to the number carries, and the reply asks for
  the link instead. STOP (and Twilio's other opt-out words) puts the number on the opt-out
  list, START takes it off (so does YES from an opted-out number), HELP answers with who we
  are; every change is audited. SMS rows to an opted-out number are suppressed. Each reply
  is TwiML. Each message is acted on once: its MessageSid is recorded in the transaction
  that makes its changes, so a copy of it (Twilio retrying, or a signed request replayed,
  even at the same moment) changes nothing, audits nothing, and is answered with the TwiML
  the first copy got. Ids are remembered for a week (`INBOUND_MEMORY`); a form without one
  (Twilio always sends it) is acted on each time.

Unsigned or wrongly signed requests get 403 and change nothing; a form that cannot be read
(malformed, a file, NUL) gets 400. With SMS not configured the hooks answer 404.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from twilio.twiml.messaging_response import MessagingResponse

from channels.base import ChannelName
from channels.smsinbound import (
    Keyword,
    ack_reply,
    opt_keyword,
    status_update,
    valid_twilio_signature,
)
from core.clock import Clock
from dissemination.acks.smscodes import (
    AMBIGUOUS_CODE_REPLY,
    audit_ambiguous_code,
    audit_foreign_code,
    match_sms_reply,
)
from dissemination.acks.tracking import AckChannel, AckStore
from dissemination.api.errors import ApiError
from dissemination.api.requests import form_fields
from dissemination.delivery.configure import STATUS_HOOK
from dissemination.metrics import Metrics
from dissemination.settings import Settings
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.rows import ProviderStatus, record_provider_status
from dissemination.store.tables import sms_inbound, sms_opt_outs

INBOUND_HOOK = "/hooks/twilio/sms"
OPT_OUT_ACTOR = Actor(None, "sms keyword")
HELP_TEXT = (
    "Alert notifications from {name}. Reply ACK to acknowledge the latest alert (ACK and its "
    "code for another). Reply STOP to stop receiving alerts by SMS, START to resume."
)
HEADLINE_IN_REPLY = 100
INBOUND_MEMORY = timedelta(days=7)
"""How long an answered inbound message is remembered (and a copy of it ignored)."""


class TwilioHooks:
    """The handlers, with what they need: the ledger, the auth token, the public URL."""

    def __init__(
        self, database: Database, settings: Settings, clock: Clock, metrics: Metrics | None = None
    ) -> None:
        self.database = database
        self.acks = AckStore(database, metrics)
        self.auth_token = settings.sms.auth_token if settings.sms.account_sid else None
        self.public_url = settings.http.public_url.rstrip("/")
        self.sender_name = settings.email.from_address
        self.clock = clock

    async def _signed_form(self, request: web.Request) -> dict[str, str]:
        if not self.auth_token:
            raise ApiError(404, "sms_not_configured", "SMS is not configured on this service")
        form = await form_fields(request)
        url = self.public_url + request.rel_url.path_qs
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not valid_twilio_signature(self.auth_token, url, form, signature):
            raise ApiError(403, "invalid_signature", "missing or invalid X-Twilio-Signature")
        return form

    async def status(self, request: web.Request) -> web.Response:
        update_ = status_update(await self._signed_form(request))
        if update_ is not None:
            async with self.database.transaction() as conn:
                await record_provider_status(conn, _provider_status(*update_), self.clock())
        return web.Response(status=204)

    async def inbound(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        sid = _message_sid(form)
        now = self.clock()
        async with self.database.transaction() as conn:
            # Claimed first: the write serializes copies of one message (and takes SQLite's
            # write lock before anything is read), so only one of them is acted on.
            if sid and not await _first_copy(conn, self.database, sid, now):
                reply = await _earlier_reply(conn, sid)
            else:
                reply = await self._answer(conn, form, now)
                if sid:
                    await _remember_reply(conn, sid, reply)
        return web.Response(text=reply, content_type="text/xml")

    async def _answer(self, conn: AsyncConnection, form: dict[str, str], now: datetime) -> str:
        """Act on an inbound message; the TwiML that answers it."""
        number, body = form.get("From", ""), form.get("Body", "")
        keyword, ack = opt_keyword(body), ack_reply(body)
        reply = MessagingResponse()
        if keyword is Keyword.HELP:
            reply.message(HELP_TEXT.format(name=self.sender_name))
        elif not number:
            pass
        elif ack is not None and not (keyword is Keyword.START and await _opted_out(conn, number)):
            reply.message(await self._acknowledge(conn, number, ack.code, now))
        elif keyword is not None:
            await _set_opt_out(conn, self.database, number, keyword, now)
        return str(reply)

    async def _acknowledge(
        self, conn: AsyncConnection, number: str, code: str | None, now: datetime
    ) -> str:
        """Acknowledge what the reply refers to; the text that answers it."""
        match = await match_sms_reply(conn, number, code, now)
        open_ack = match.row
        if open_ack is None:
            if match.ambiguous and code is not None:
                await audit_ambiguous_code(conn, number, code, now)
                return AMBIGUOUS_CODE_REPLY.format(code=code)
            if match.elsewhere and code is not None:
                await audit_foreign_code(conn, number, code, now)
            if code is None:
                return "There is no alert waiting for your acknowledgment."
            return f"No alert with code {code} was sent to this number."
        outcome = await self.acks.acknowledge_in(
            conn, open_ack["alert_id"], open_ack["stakeholder_id"], AckChannel.SMS, now
        )
        headline = _shortened(str(open_ack["headline"] or "the alert"))
        if outcome is None or outcome.new:
            return f"Acknowledged: {headline}. Thank you."
        return f"Already acknowledged: {headline}."


def _provider_status(sid: str, state: str, error_code: str | None) -> ProviderStatus:
    reason = None if state == "delivered" else f"{state}: Twilio error {error_code or 'unknown'}"
    return ProviderStatus(ChannelName.SMS.value, sid, state, error_code, reason)


def _message_sid(form: dict[str, str]) -> str:
    return form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid") or ""


async def _first_copy(conn: AsyncConnection, database: Database, sid: str, now: datetime) -> bool:
    """Claim the message `sid` for this request, and forget messages answered long ago; False
    if it was claimed before (this is a retry or a replay)."""
    claimed = await conn.execute(
        database.insert_ignoring_conflicts(sms_inbound).values(message_sid=sid, received_at=now)
    )
    await conn.execute(delete(sms_inbound).where(sms_inbound.c.received_at < now - INBOUND_MEMORY))
    return claimed.rowcount == 1


async def _remember_reply(conn: AsyncConnection, sid: str, reply: str) -> None:
    await conn.execute(
        update(sms_inbound).where(sms_inbound.c.message_sid == sid).values(reply=reply)
    )


async def _earlier_reply(conn: AsyncConnection, sid: str) -> str:
    reply = await conn.scalar(select(sms_inbound.c.reply).where(sms_inbound.c.message_sid == sid))
    return str(reply) if reply else str(MessagingResponse())


async def _opted_out(conn: AsyncConnection, number: str) -> bool:
    keyword = await conn.scalar(
        select(sms_opt_outs.c.keyword).where(sms_opt_outs.c.address == number)
    )
    return keyword is not None


async def _set_opt_out(
    conn: AsyncConnection, database: Database, number: str, keyword: Keyword, now: datetime
) -> None:
    """Put the number on the opt-out list or take it off, audited if that changed anything."""
    opting_out = keyword is Keyword.STOP
    if opting_out:
        changed = await conn.execute(
            database.insert_ignoring_conflicts(sms_opt_outs).values(
                address=number, keyword=keyword.value, at=now
            )
        )
    else:
        changed = await conn.execute(delete(sms_opt_outs).where(sms_opt_outs.c.address == number))
    if changed.rowcount != 1:
        return
    await write_audit(
        conn,
        at=now,
        actor=OPT_OUT_ACTOR,
        action="opt_out" if opting_out else "opt_in",
        entity="sms_opt_out",
        entity_id=None,
        before=None,
        after={"address": number, "keyword": keyword.value},
        reason=f"{keyword.value} received by SMS",
    )


def _shortened(text: str) -> str:
    return text if len(text) <= HEADLINE_IN_REPLY else text[: HEADLINE_IN_REPLY - 3] + "..."


def add_twilio_hooks(app: web.Application, hooks: TwilioHooks) -> None:
    app.router.add_post(STATUS_HOOK, hooks.status)
    app.router.add_post(INBOUND_HOOK, hooks.inbound)
