"""Twilio's callbacks into the service, each signature-checked with Twilio's request
validator against the configured public URL (what Twilio signed), never the Host header:

- `POST /hooks/twilio/status`: message status callbacks move an SMS row from `sent` to
  `delivered`, or to `failed` when Twilio reports it undelivered or failed. Only forward: a
  late or repeated callback changes nothing.
- `POST /hooks/twilio/sms`: inbound messages. STOP (and Twilio's other opt-out words) puts
  the number on the opt-out list, START takes it off, HELP answers with who we are; every
  change is audited. SMS rows to an opted-out number are suppressed.

Unsigned or wrongly signed requests get 403 and change nothing. With SMS not configured the
hooks answer 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import delete, select, update
from twilio.twiml.messaging_response import MessagingResponse

from channels.sms import Keyword, opt_keyword, status_update, valid_twilio_signature
from dissemination.apierrors import ApiError
from dissemination.audit import Actor, write_audit
from dissemination.database import Database
from dissemination.intake import Clock
from dissemination.planning import DeliveryState
from dissemination.settings import Settings
from dissemination.tables import deliveries, sms_opt_outs

STATUS_HOOK = "/hooks/twilio/status"
INBOUND_HOOK = "/hooks/twilio/sms"
OPT_OUT_ACTOR = Actor(None, "sms keyword")
HELP_TEXT = (
    "Alert notifications from {name}. Reply STOP to stop receiving alerts by SMS, START to resume."
)


class TwilioHooks:
    """The handlers, with what they need: the ledger, the auth token, the public URL."""

    def __init__(self, database: Database, settings: Settings, clock: Clock) -> None:
        self.database = database
        self.auth_token = settings.sms.auth_token if settings.sms.account_sid else None
        self.public_url = settings.http.public_url.rstrip("/")
        self.sender_name = settings.email.from_address
        self.clock = clock

    async def _signed_form(self, request: web.Request) -> dict[str, str]:
        if not self.auth_token:
            raise ApiError(404, "sms_not_configured", "SMS is not configured on this service")
        form = {key: str(value) for key, value in (await request.post()).items()}
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
        values: dict[str, Any] = {
            "state": (DeliveryState.DELIVERED if delivered else DeliveryState.FAILED).value,
            "updated_at": now,
        }
        if not delivered:
            values["reason"] = f"{state}: Twilio error {error_code or 'unknown'}"
        async with self.database.transaction() as conn:
            await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.provider_id == sid,
                    deliveries.c.channel == "sms",
                    deliveries.c.state == DeliveryState.SENT.value,
                )
                .values(**values)
            )

    async def inbound(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        number, keyword = form.get("From", ""), opt_keyword(form.get("Body", ""))
        reply = MessagingResponse()
        if keyword is Keyword.HELP:
            reply.message(HELP_TEXT.format(name=self.sender_name))
        elif keyword is not None and number:
            await self._set_opt_out(number, keyword, self.clock())
        return web.Response(text=str(reply), content_type="text/xml")

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


def add_twilio_hooks(app: web.Application, hooks: TwilioHooks) -> None:
    app.router.add_post(STATUS_HOOK, hooks.status)
    app.router.add_post(INBOUND_HOOK, hooks.inbound)
