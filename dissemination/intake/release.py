"""Releasing ad-hoc sends onto the inbound exchange, where the consumer takes them like any
other message: at once when the send is accepted, or by the periodic job when `send_at`
comes (which also picks up a send whose release was interrupted).

A release claims the send (compare-and-set, `ledger.sends`), publishes the alert with
confirms as the service's own broker user, naming its submitter (x-submitted-by) and its
send (x-send-id, whose audience intake plans it for), and then records the release. A failed
publication puts the send back, due at once."""

from __future__ import annotations

import structlog

from core.clock import Clock, utc_now
from dissemination.broker.publisher import AlertPublisher
from dissemination.errors import PublishFailed
from dissemination.intake.consumer import SEND_HEADER, SUBMITTED_BY_HEADER
from dissemination.ledger.sends import SCHEDULER, Release, Sends
from dissemination.store.audit import Actor

log = structlog.stdlib.get_logger(__name__)


class SendReleaser:
    """Publishes sends that are due; `run_due` is the periodic job."""

    def __init__(
        self,
        sends: Sends,
        publisher: AlertPublisher,
        broker_user: str | None,
        clock: Clock = utc_now,
    ) -> None:
        self.sends = sends
        self.publisher = publisher
        self.broker_user = broker_user
        self.clock = clock

    async def release(self, send_id: str, actor: Actor = SCHEDULER) -> bool:
        """Publish the send if this instance claims it; False when it was not claimable (not
        due, released or cancelled, or claimed elsewhere). PublishFailed puts it back."""
        release = await self.sends.claim(send_id, self.clock())
        if release is None:
            return False
        try:
            await self._publish(release)
        except PublishFailed:
            await self.sends.unclaim(release, self.clock())
            raise
        await self.sends.released(release, actor, self.clock())
        log.info("send_released", send_id=send_id, alert_id=release.alert_id)
        return True

    async def run_due(self) -> int:
        """Release every send that has come due; how many this instance released."""
        released = 0
        for send_id in await self.sends.due(self.clock()):
            released += await self.release(send_id)
        return released

    async def _publish(self, release: Release) -> None:
        headers: dict[str, str] = {SEND_HEADER: release.id}
        if release.submitted_by is not None:
            headers[SUBMITTED_BY_HEADER] = release.submitted_by
        await self.publisher.publish(
            release.payload.body,
            release.payload.content_type,
            release.routing_key,
            release.alert_id,
            headers=dict(headers),
            user_id=self.broker_user,
        )
