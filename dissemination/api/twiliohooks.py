"""Twilio's callbacks into the service, each signature-checked with Twilio's request
validator against the configured public URL (what Twilio signed), never the Host header:

- `POST /hooks/twilio/status`: message status callbacks move an SMS row from `sent` to
  `delivered`, or to `failed` when Twilio reports it undelivered or failed. Only forward: a
  late or repeated callback changes nothing.
- `POST /hooks/twilio/sms`: inbound messages. Replies such as `ACK`, `ACK 4821`, `1` or
  `YES` acknowledge: with a code, that alert; without, the newest unacknowledged alert texted
  to the number. A code issued to another number acknowledges nothing and is audited. STOP
  (and Twilio's other opt-out words) puts the number on the opt-out list, START takes it off
  (so does YES from an opted-out number), HELP answers with who we are; every change is
  audited. SMS rows to an opted-out number are suppressed. Each reply is TwiML.

Unsigned or wrongly signed requests get 403 and change nothing; a form that cannot be read
(malformed, a file, NUL) gets 400. With SMS not configured the hooks answer 404.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from sqlalchemy import delete, select
from twilio.twiml.messaging_response import MessagingResponse

from channels.sms import (
    Keyword,
    ack_reply,
    opt_keyword,
    status_update,
    valid_twilio_signature,
)
from core.clock import Clock
from dissemination.acks.tracking import AckChannel, AckStore
from dissemination.api.errors import ApiError
from dissemination.api.requests import form_fields
from dissemination.delivery.configure import STATUS_HOOK
from dissemination.settings import Settings
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.rows import record_provider_status
from dissemination.store.tables import sms_opt_outs

INBOUND_HOOK = "/hooks/twilio/sms"
OPT_OUT_ACTOR = Actor(None, "sms keyword")
HELP_TEXT = (
    "Alert notifications from {name}. Reply ACK to acknowledge the latest alert (ACK and its "
    "code for another). Reply STOP to stop receiving alerts by SMS, START to resume."
)
HEADLINE_IN_REPLY = 100


class TwilioHooks:
    """The handlers, with what they need: the ledger, the auth token, the public URL."""

    def __init__(self, database: Database, settings: Settings, clock: Clock) -> None:
        self.database = database
        self.acks = AckStore(database)
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
            sid, state, error_code = update_
            await self._record_status(sid, state, error_code, self.clock())
        return web.Response(status=204)

    async def _record_status(
        self, sid: str, state: str, error_code: str | None, now: datetime
    ) -> None:
        delivered = state == "delivered"
        reason = None if delivered else f"{state}: Twilio error {error_code or 'unknown'}"
        async with self.database.transaction() as conn:
            await record_provider_status(conn, "sms", sid, delivered, reason, now)

    async def inbound(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        number, body = form.get("From", ""), form.get("Body", "")
        keyword, ack = opt_keyword(body), ack_reply(body)
        reply = MessagingResponse()
        if keyword is Keyword.HELP:
            reply.message(HELP_TEXT.format(name=self.sender_name))
        elif not number:
            pass
        elif ack is not None and not (keyword is Keyword.START and await self._opted_out(number)):
            reply.message(await self._acknowledge(number, ack.code))
        elif keyword is not None:
            await self._set_opt_out(number, keyword, self.clock())
        return web.Response(text=str(reply), content_type="text/xml")

    async def _acknowledge(self, number: str, code: str | None) -> str:
        """Acknowledge what the reply refers to; the text that answers it."""
        now = self.clock()
        open_ack, elsewhere = await self.acks.for_sms_reply(number, code, now)
        if open_ack is None:
            if elsewhere and code is not None:
                await self.acks.audit_foreign_code(number, code, now)
            if code is None:
                return "There is no alert waiting for your acknowledgment."
            return f"No alert with code {code} was sent to this number."
        outcome = await self.acks.acknowledge(
            open_ack["alert_id"], open_ack["stakeholder_id"], AckChannel.SMS, now
        )
        headline = _shortened(str(open_ack["headline"] or "the alert"))
        if outcome is None or outcome.new:
            return f"Acknowledged: {headline}. Thank you."
        return f"Already acknowledged: {headline}."

    async def _opted_out(self, number: str) -> bool:
        async with self.database.reading() as conn:
            keyword = await conn.scalar(
                select(sms_opt_outs.c.keyword).where(sms_opt_outs.c.address == number)
            )
        return keyword is not None

    async def _set_opt_out(self, number: str, keyword: Keyword, now: datetime) -> None:
        async with self.database.transaction() as conn:
            existing = await conn.scalar(
                select(sms_opt_outs.c.keyword).where(sms_opt_outs.c.address == number)
            )
            opting_out = keyword is Keyword.STOP
            if opting_out == (existing is not None):
                return
            if opting_out:
                await conn.execute(
                    sms_opt_outs.insert().values(address=number, keyword=keyword.value, at=now)
                )
            else:
                await conn.execute(delete(sms_opt_outs).where(sms_opt_outs.c.address == number))
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
