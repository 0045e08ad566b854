"""What a service's store does while its `deliveries` table is small (a new deployment's first
alerts): claims and settles that run its statements more than five times each, after which
PostgreSQL may keep one plan for each, made for the table as it was. The benchmarks and the
tests that measure or check what follows use it."""

from __future__ import annotations

from datetime import UTC, datetime

from dissemination.delivery.claims import DeliveryStore, Settlement
from dissemination.store.rows import ClaimedRow, DeliveryState, RowOrigin

ABSENT = ClaimedRow(
    id="absent",
    alert_id="absent",
    stakeholder_id="absent",
    subscription_id=None,
    contact_id=None,
    channel="webhook",
    address="http://127.0.0.1:9/absent",
    attempts=1,
    origin=RowOrigin.MATCH,
    detail=None,
    fallback_channels=(),
    ack_required=False,
    subscriptions=(),
    resent=False,
    document={},
    stakeholder=None,
)
"""A claimed row that is not in the table: claiming or settling it changes nothing."""


async def claim_and_settle_nothing(delivery: DeliveryStore, times: int) -> None:
    """Claim and settle a row that does not exist, `times` times each, one after the other
    (so on the pool's last-used connection, where the work that follows runs too)."""
    for _ in range(times):
        await delivery.claim([ABSENT.id], datetime.now(UTC))
        # failed: no record entry or first delivery to write for a row that is not there
        failed = Settlement(ABSENT, DeliveryState.FAILED, "HTTP 400", detail="absent")
        await delivery.settle([failed], datetime.now(UTC))
