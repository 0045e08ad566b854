"""Who may publish as which sender, and who may update or cancel an alert, over HTTP and over
AMQP: a publisher token publishes only as its senders; an Update or Cancel is accepted only
from the sender of the alert it refers to (an administrator may act for another sender with
a stated reason, audited); a broker user publishes only as the senders `broker.publishers`
grants it, and a message that names no broker user is refused. Nothing refused is stored or
reaches a recipient."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from sqlalchemy import select

from dissemination.api.tokens import Role, TokenStore
from dissemination.broker.topology import broker_url
from dissemination.controls.authority import Submitter, parse_grants
from dissemination.intake.consumer import submitter_of
from dissemination.service import Service
from dissemination.settings import Settings
from dissemination.store.audit import AuditLog
from dissemination.store.tables import alerts
from testbed.alerts import cap_json
from tests.approvalrig import call
from tests.brokerutil import get_all, publish, rejection_of, wait_until
from tests.deliveryrig import (  # noqa: F401 - fixtures
    TERMINAL,
    Sinks,
    StartService,
    custom_service_fixture,
    rows_of,
    settled,
    sinks_fixture,
)
from tests.people import enrol

pytestmark = pytest.mark.slow

COUNTY = "eoc@anytown.example.gov"
STATE = "warnings@state.example.gov"


async def token_for(service: Service, role: Role, *senders: str) -> dict[str, str]:
    _, secret = await TokenStore(service.database).create(
        f"{role.value}-{uuid.uuid4().hex[:6]}", role, datetime.now(UTC), senders
    )
    return {"Authorization": f"Bearer {secret}"}


def alert_of(sender: str, identifier: str, **changes: Any) -> dict[str, Any]:
    return cap_json(identifier, **({"sender": sender, "handling": {"tlp": "GREEN"}} | changes))


def cancel_of(original: dict[str, Any], sender: str, identifier: str) -> dict[str, Any]:
    reference = f"{original['sender']},{original['identifier']},{original['sent']}"
    return alert_of(sender, identifier, msgType="Cancel", references=reference)


async def test_a_publisher_token_publishes_only_as_its_senders(
    custom_service: StartService, sinks: Sinks
) -> None:
    service, _settings, _channel = await custom_service()
    county = await token_for(service, Role.PUBLISHER, COUNTY)
    status, accepted = await call(sinks, "POST", "/api/v1/alerts", county, alert_of(COUNTY, "C-1"))
    assert status == 202, accepted
    status, refused = await call(sinks, "POST", "/api/v1/alerts", county, alert_of(STATE, "S-1"))
    assert (status, refused["error"]["code"]) == (403, "sender_not_allowed")
    # the sender is compared as CAP writes it: without regard to letter case
    shouting = alert_of(COUNTY.upper(), "C-2")
    assert (await call(sinks, "POST", "/api/v1/alerts", county, shouting))[0] == 202
    unbound = await token_for(service, Role.PUBLISHER)
    status, refused = await call(sinks, "POST", "/api/v1/alerts", unbound, alert_of(COUNTY, "C-3"))
    assert (status, refused["error"]["code"]) == (403, "sender_not_allowed")
    assert "no sender" in refused["error"]["message"]


async def test_only_the_original_sender_may_cancel_even_a_held_alert(
    custom_service: StartService, sinks: Sinks
) -> None:
    service, _settings, _channel = await custom_service(approval_rules="cap any")
    await enrol(service, "Duty officer", {"email": "duty@example.org"}, max_tlp="RED")
    county = await token_for(service, Role.PUBLISHER, COUNTY)
    state = await token_for(service, Role.PUBLISHER, STATE)
    original = alert_of(COUNTY, "HELD-1", handling={"tlp": "RED"})
    status, accepted = await call(sinks, "POST", "/api/v1/alerts", county, original)
    assert status == 202

    async def held() -> bool:
        rows = await rows_of(service, accepted["id"])
        return [row["state"] for row in rows] == ["held"]

    await wait_until(held, what="the held row")
    foreign = cancel_of(original, STATE, "HELD-1-CANCEL-BY-STATE")
    status, refused = await call(sinks, "POST", "/api/v1/alerts", state, foreign)
    assert (status, refused["error"]["code"]) == (403, "not_original_sender")
    # spelled another way, the reference still means the county's alert
    sneaky = cancel_of(original | {"sender": COUNTY.upper()}, STATE, "HELD-1-SNEAKY")
    assert (await call(sinks, "POST", "/api/v1/alerts", state, sneaky))[0] == 403
    assert [row["state"] for row in await rows_of(service, accepted["id"])] == ["held"]

    own = cancel_of(original, COUNTY, "HELD-1-CANCEL")
    status, cancel = await call(sinks, "POST", "/api/v1/alerts", county, own)
    assert status == 202

    async def withdrawn() -> bool:
        rows = await rows_of(service, accepted["id"])
        return [row["state"] for row in rows] == ["suppressed"]

    async def cancel_settled() -> bool:
        rows = await rows_of(service, cancel["id"])
        return bool(rows) and all(row["state"] in TERMINAL for row in rows)

    await wait_until(withdrawn, what="the county's own Cancel")
    # the Cancel is a message of its own (never held), which the subscription matches; wait
    # for it rather than race it, then check that the held original never went out
    await wait_until(cancel_settled, what="the Cancel's own rows")
    original_header = f"X-Alert-Id: {accepted['id']}".encode()
    assert [m for m in sinks.smtp.messages if original_header in m.raw] == []


async def test_an_administrator_acts_for_another_sender_only_with_a_reason_audited(
    custom_service: StartService, sinks: Sinks
) -> None:
    service, _settings, _channel = await custom_service()
    county = await token_for(service, Role.PUBLISHER, COUNTY)
    admin = await token_for(service, Role.ADMIN)
    original = alert_of(COUNTY, "ADMIN-1")
    assert (await call(sinks, "POST", "/api/v1/alerts", county, original))[0] == 202
    withdrawal = cancel_of(original, COUNTY, "ADMIN-1-CANCEL")
    status, refused = await call(sinks, "POST", "/api/v1/alerts", admin, withdrawal)
    assert (status, refused["error"]["code"]) == (403, "reason_required")
    stated = admin | {"X-Act-Reason": "the county EOC lost power; cancelling at its request"}
    status, accepted = await call(sinks, "POST", "/api/v1/alerts", stated, withdrawal)
    assert status == 202, accepted
    [entry] = await AuditLog(service.database).entries(entity="alert", entity_id=accepted["id"])
    assert (entry["action"], entry["reason"]) == (
        "publish_for_sender",
        "the county EOC lost power; cancelling at its request",
    )
    assert entry["after"] == {"sender": COUNTY, "msgType": "Cancel"}


# --- AMQP: per broker user -------------------------------------------------------------------


def _message(user_id: str | None, **headers: str) -> AbstractIncomingMessage:
    """What `submitter_of` reads of a message: its broker user and headers."""
    return cast(AbstractIncomingMessage, SimpleNamespace(user_id=user_id, headers=headers))


@pytest.mark.parametrize(
    ("user_id", "headers", "expected"),
    [
        ("svc", {"x-submitted-by": "token:t-1"}, Submitter("token:t-1")),
        ("svc", {}, Submitter(None)),
        # another user cannot claim a token's authority by writing the header
        ("feed", {"x-submitted-by": "token:t-1"}, Submitter("amqp:feed", frozenset({"a@b"}))),
        ("other", {}, Submitter("amqp:other", frozenset())),
        (None, {"x-submitted-by": "token:t-1"}, Submitter(None, frozenset(), known=False)),
    ],
)
def test_who_published_a_message_is_what_the_broker_vouches_for(
    user_id: str | None, headers: dict[str, str], expected: Submitter
) -> None:
    grants = parse_grants(["feed=A@B"])
    assert submitter_of(_message(user_id, **headers), "svc", grants) == expected


def _rabbitmqctl(*args: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl not found: these tests need a local RabbitMQ")
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def feed_user(vhost: str) -> Iterator[tuple[str, str]]:
    """A broker user of an upstream feed, allowed to publish in the test's virtual host."""
    name, password = f"feed-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    _rabbitmqctl("add_user", name, password)
    _rabbitmqctl("set_permissions", "-p", vhost, name, "^$", ".*", "^$")
    yield name, password
    _rabbitmqctl("delete_user", name)


@pytest.fixture
async def feed_channel(
    custom_service: StartService, feed_user: tuple[str, str]
) -> AsyncIterator[tuple[Service, Settings, AbstractChannel, AbstractChannel]]:
    """The service granting the feed user the county's sender, a channel of the feed
    user's own, and one of the service's user (to read the dead letters)."""
    user, _password = feed_user
    service, settings, own = await custom_service(broker_publishers=f"{user}={COUNTY}")
    as_feed = dataclasses.replace(settings.broker, username=user, password=feed_user[1])
    connection = await aio_pika.connect_robust(broker_url(as_feed))
    try:
        yield service, settings, await connection.channel(publisher_confirms=True), own
    finally:
        await connection.close()


async def publish_as(
    channel: AbstractChannel, settings: Settings, document: dict[str, Any], user: str | None
) -> None:
    exchange = await channel.get_exchange(settings.broker.exchange, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            json.dumps(document).encode(),
            content_type="application/json",
            message_id=document["identifier"],
            user_id=user,
        ),
        routing_key="feed.alert",
        mandatory=True,
    )


async def test_a_broker_user_publishes_only_as_the_senders_granted_to_it(
    feed_channel: tuple[Service, Settings, AbstractChannel, AbstractChannel],
    feed_user: tuple[str, str],
) -> None:
    service, settings, feed, own = feed_channel
    user = feed_user[0]
    original = alert_of(COUNTY, "FEED-1")
    await publish_as(feed, settings, original, user)
    await publish_as(feed, settings, alert_of(STATE, "FEED-2"), user)
    await publish_as(feed, settings, alert_of(COUNTY, "FEED-3"), None)  # names no user
    await publish(own, settings, json.dumps(alert_of(STATE, "STATE-1")).encode())
    dead = await get_all(own, settings.broker.dead_letter_queue, 2)
    assert {m.message_id: rejection_of(m)[0] for m in dead} == {
        "FEED-2": "sender_not_allowed",
        "FEED-3": "publisher_unknown",
    }

    async def stored() -> bool:
        return len(await _alerts(service)) == 2

    await wait_until(stored, what="the two accepted alerts")
    assert sorted(await _alerts(service)) == ["FEED-1", "STATE-1"]

    # the state's alert cannot be cancelled by the county's feed, even spelled as the state
    await publish_as(feed, settings, cancel_of(alert_of(STATE, "STATE-1"), COUNTY, "X-1"), user)
    [dead_cancel] = await get_all(own, settings.broker.dead_letter_queue, 1)
    assert rejection_of(dead_cancel)[0] == "not_original_sender"


async def _alerts(service: Service) -> list[str]:
    async with service.database.reading() as conn:
        return list(await conn.scalars(select(alerts.c.identifier)))
