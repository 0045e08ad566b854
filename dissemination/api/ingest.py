"""HTTP alert ingest for upstream systems that cannot speak AMQP: the alert is validated, its
publisher's authority checked, and it is published onto the same exchange with confirms
(the AMQP consumer then takes it like any other message).

Authority: a publisher token may publish only as the senders it was created with, and an
Update or Cancel only with the sender of the alerts it refers to. An administrator may act
for another sender by stating why in the `X-Act-Reason` header; that is audited.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from core.alert import Alert
from core.clock import utc_now
from core.errors import RejectedInput
from dissemination.api.app import RUNTIME, Runtime, authenticate, broker_ready
from dissemination.api.errors import ApiError
from dissemination.api.principal import Principal
from dissemination.api.tokens import Role
from dissemination.controls.approval import principal
from dissemination.controls.authority import (
    foreign_senders,
    foreign_senders_possible,
    may_publish_as,
)
from dissemination.errors import PublishFailed
from dissemination.intake.consumer import SUBMITTED_BY_HEADER
from dissemination.ledger.alerts import Payload
from dissemination.store.audit import write_audit


async def ingest_alert(request: web.Request) -> web.Response:
    """POST /api/v1/alerts: validate, publish with confirms, 202 with the alert ids."""
    token = await authenticate(request, Role.PUBLISHER, Role.ADMIN)
    runtime = request.app[RUNTIME]
    limit = runtime.processor.limits.max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"bodies are limited to {limit} bytes")
    payload = Payload(await request.read(), request.headers.get("Content-Type", ""))
    try:
        alerts = runtime.processor.parse(payload)
    except RejectedInput as rejected:
        runtime.processor.metrics.alert_rejected("http", rejected.reason)
        raise ApiError.from_rejection(rejected) from None
    acting_for = await check_authority(request, runtime, token, alerts)
    if runtime.publisher is None or not broker_ready(runtime):
        raise ApiError(503, "broker_unavailable", "the broker is not connected; retry later")
    first = alerts[0]
    routing_key = f"{first.kind.value}.{first.msg_type.value.lower()}"
    try:
        await runtime.publisher.publish(
            payload.body,
            payload.content_type or "application/json",
            routing_key,
            first.id,
            headers={SUBMITTED_BY_HEADER: principal(token.actor)},
            user_id=runtime.broker_user,
        )
    except PublishFailed as error:
        raise ApiError(503, "broker_unavailable", str(error)) from None
    if acting_for:
        await audit_acting_for(runtime, token, alerts, acting_for)
    ids = [alert.id for alert in alerts]
    return web.json_response({"id": ids[0], "ids": ids}, status=202)


ACT_REASON_HEADER = "X-Act-Reason"
REASON_LENGTH = (3, 500)


async def check_authority(
    request: web.Request, runtime: Runtime, token: Principal, alerts: Sequence[Alert]
) -> str | None:
    """403 unless the token may publish every alert; the administrator's stated reason when
    one acts for another sender (None when the token's own senders suffice)."""
    acting_for = False
    for alert in alerts:
        problem = None
        if not may_publish_as(alert.sender, token.senders):
            problem = ApiError(
                403,
                "sender_not_allowed",
                f"this token may not publish as {alert.sender!r} (it publishes as "
                f"{', '.join(token.senders) or 'no sender'})",
            )
        elif foreign_senders_possible(alert):
            others = foreign_senders(alert, await runtime.ledger.senders_of(alert.references))
            if others:
                problem = ApiError(
                    403,
                    "not_original_sender",
                    f"only {others[0]!r} may update or cancel its alerts",
                )
        if problem is not None:
            if token.role is not Role.ADMIN:
                raise problem
            acting_for = True
    if not acting_for:
        return None
    return _stated_reason(request)


def _stated_reason(request: web.Request) -> str:
    """The administrator's reason for acting for another sender: required, bounded."""
    reason = request.headers.get(ACT_REASON_HEADER, "").strip()
    low, high = REASON_LENGTH
    if not low <= len(reason) <= high:
        raise ApiError(
            403,
            "reason_required",
            f"an administrator acting for another sender must say why in {ACT_REASON_HEADER} "
            f"({low} to {high} characters); it is audited",
        )
    return reason


async def audit_acting_for(
    runtime: Runtime, token: Principal, alerts: Sequence[Alert], reason: str
) -> None:
    async with runtime.database.transaction() as conn:
        for alert in alerts:
            await write_audit(
                conn,
                at=utc_now(),
                actor=token.actor,
                action="publish_for_sender",
                entity="alert",
                entity_id=alert.id,
                before=None,
                after={"sender": alert.sender, "msgType": alert.msg_type.value},
                reason=reason,
            )


def add_ingest_routes(app: web.Application) -> None:
    """POST /api/v1/alerts."""
    app.router.add_post("/api/v1/alerts", ingest_alert)
