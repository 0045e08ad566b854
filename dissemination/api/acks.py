"""Acknowledging over HTTP.

- `GET /ack/{token}` shows the alert (marking, headline, severity, sender) and a Confirm
  button, and changes nothing: mail and SMS link scanners open links before people do.
- `POST /ack/{token}` records the acknowledgment (with an optional comment) and confirms it.
- `POST /api/v1/acks` is the same for webhook receivers: `{"token": ..., "comment": ...}`.
- `POST /api/v1/alerts/{id}/acks` lets an administrator acknowledge on a stakeholder's
  behalf, with a reason that is audited.

Repeating an acknowledgment is harmless. A tampered token gets 403, an expired one 410, one
that names nothing 404, a form that cannot be read 400; pages are HTML, API answers JSON
errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from channels.content import AlertContent
from core.clock import Clock
from dissemination.acks.tokens import AckSigner
from dissemination.acks.tracking import AckChannel, AckOutcome, AckStore
from dissemination.api.app import authenticate
from dissemination.api.errors import ApiError
from dissemination.api.needtoknow import NeedToKnow
from dissemination.api.requests import form_fields, json_body, validated
from dissemination.api.tokens import Role
from dissemination.errors import TokenRefused
from dissemination.ledger.progress import ProgressStore
from dissemination.store.audit import Actor

MAX_COMMENT = 500
MAX_FORM_BYTES = 4096
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}
TOKEN_ERRORS = {403: "invalid_token", 404: "not_found", 410: "token_expired"}
_pages = Environment(
    loader=PackageLoader("dissemination.api", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",)),
    undefined=StrictUndefined,
)


@dataclass(slots=True)
class AckEndpoints:
    """What the handlers need: the signer, the ledger's acknowledgments, and the clock."""

    signer: AckSigner
    store: AckStore
    clock: Clock

    async def _row(self, token: str) -> dict[str, Any]:
        """The `acks` row the token names; TokenRefused (403, 410, 404) otherwise."""
        verified = self.signer.verify(token, self.clock())
        row = await self.store.by_token(verified.token_id)
        if row is None:
            raise TokenRefused(404, "this acknowledgment link names no alert")
        return row

    async def page(self, request: web.Request) -> web.Response:
        try:
            row = await self._row(request.match_info["token"])
        except TokenRefused as refused:
            return _page(refused.status, "Acknowledgment", str(refused))
        content = AlertContent.from_document(row["document"])
        if row["acknowledged_at"] is not None:
            return _page(200, "Already acknowledged", _already(row), content)
        return _page(200, "Confirm receipt", None, content, confirm=True)

    async def confirm(self, request: web.Request) -> web.Response:
        try:
            row = await self._row(request.match_info["token"])
        except TokenRefused as refused:
            return _page(refused.status, "Acknowledgment", str(refused))
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return _page(413, "Acknowledgment", "The comment is too long.")
        try:
            form = await form_fields(request)
        except ApiError:
            return _page(400, "Acknowledgment", "The form could not be read. Please try again.")
        comment = _comment(form.get("comment", ""))
        if comment is None:
            return _page(
                400, "Acknowledgment", f"Comments are limited to {MAX_COMMENT} characters."
            )
        outcome = await self._acknowledge(row, AckChannel.LINK, comment)
        content = AlertContent.from_document(row["document"])
        if not outcome.new:
            return _page(200, "Already acknowledged", _already(row | _ack_fields(outcome)), content)
        return _page(
            200, "Acknowledged", "Thank you: your receipt of this alert is recorded.", content
        )

    async def by_token(self, request: web.Request) -> web.Response:
        """POST /api/v1/acks: a webhook receiver acknowledges with the token it was sent."""
        body = validated("ack", await json_body(request))
        try:
            row = await self._row(body["token"])
        except TokenRefused as refused:
            raise ApiError(refused.status, TOKEN_ERRORS[refused.status], str(refused)) from None
        outcome = await self._acknowledge(row, AckChannel.WEBHOOK, body.get("comment") or None)
        return web.json_response(outcome.as_json(), status=201 if outcome.new else 200)

    async def on_behalf(self, request: web.Request) -> web.Response:
        """POST /api/v1/alerts/{id}/acks: an administrator records someone's acknowledgment."""
        token = await authenticate(request, Role.ADMIN)
        body = await json_body(request)
        outcome = await self.acknowledge_for(
            request.match_info["id"], body, token.actor, NeedToKnow.of(token)
        )
        return web.json_response(outcome.as_json(), status=201 if outcome.new else 200)

    async def acknowledge_for(
        self, alert_id: str, body: Any, actor: Actor, reader: NeedToKnow
    ) -> AckOutcome:
        """Record a stakeholder's acknowledgment on their behalf, `body` as the
        ack_on_behalf schema says (ApiError 422 otherwise; 403 if the alert is above the
        `reader`'s clearance, before anything about its recipients is told; 404 if they owe
        none)."""
        body = validated("ack_on_behalf", body)
        if "\x00" in alert_id:
            raise ApiError(404, "not_found", f"no alert {alert_id!r}")
        await reader.require(ProgressStore(self.store.database), alert_id, "the alert")
        outcome = await self.store.acknowledge(
            alert_id,
            body["stakeholderId"],
            AckChannel.ADMIN,
            self.clock(),
            comment=body.get("comment") or None,
            on_behalf=(actor, body["reason"]),
        )
        if outcome is None:
            raise ApiError(
                404,
                "not_found",
                f"stakeholder {body['stakeholderId']!r} owes no acknowledgment"
                f" of alert {alert_id!r}",
            )
        return outcome

    async def _acknowledge(
        self, row: dict[str, Any], channel: AckChannel, comment: str | None
    ) -> AckOutcome:
        outcome = await self.store.acknowledge(
            row["alert_id"], row["stakeholder_id"], channel, self.clock(), comment=comment
        )
        assert outcome is not None  # the row was just read and acks rows are never deleted
        return outcome


def _ack_fields(outcome: AckOutcome) -> dict[str, Any]:
    return {"acknowledged_at": outcome.acknowledged_at, "channel": outcome.channel}


def _already(row: dict[str, Any]) -> str:
    at = row["acknowledged_at"].strftime("%Y-%m-%d %H:%M UTC")
    return f"Receipt was already confirmed on {at} (by {row['channel']})."


def _comment(raw: str) -> str | None:
    """The comment trimmed, "" for none; None if it is too long or holds NUL."""
    comment = raw.strip()
    if len(comment) > MAX_COMMENT or "\x00" in comment:
        return None
    return comment


def _page(
    status: int,
    title: str,
    message: str | None,
    alert: AlertContent | None = None,
    *,
    confirm: bool = False,
) -> web.Response:
    html = _pages.get_template("ack.html.j2").render(
        title=title, message=message, alert=alert, confirm=confirm, max_comment=MAX_COMMENT
    )
    return web.Response(status=status, text=html, content_type="text/html", headers=PAGE_HEADERS)


ACKS = web.AppKey("acks", AckEndpoints)


def add_ack_routes(app: web.Application, endpoints: AckEndpoints) -> None:
    app[ACKS] = endpoints  # the console acknowledges on behalf through the same endpoints
    app.router.add_get("/ack/{token}", endpoints.page, allow_head=False)
    app.router.add_post("/ack/{token}", endpoints.confirm)
    app.router.add_post("/api/v1/acks", endpoints.by_token)
    app.router.add_post("/api/v1/alerts/{id}/acks", endpoints.on_behalf)
