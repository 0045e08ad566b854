"""A dead letter says who published the message: its broker user and, from the service's own
user, the token that submitted it and the ad-hoc send it belongs to, under x-original-*
names that nothing believes. Republished as README ("A bug") says, the message reaches the
service as it first did: an ad-hoc send's alert is planned for its named audience, and its
submitter still may not approve it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from dissemination.controls.authority import SERVICE, Submitter
from dissemination.intake.consumer import dead_letter_message, internal_error
from dissemination.intake.pipeline import IntakeResult
from dissemination.ledger.alerts import Payload
from dissemination.service import Service
from dissemination.settings import Settings
from testbed.alerts import cap_json_bytes
from tests.brokerutil import get_all, rejection_of, wait_until


def incoming(user_id: str | None, **headers: Any) -> AbstractIncomingMessage:
    return cast(
        AbstractIncomingMessage,
        SimpleNamespace(
            body=b"{}",
            content_type="application/json",
            message_id="m1",
            exchange="alerts",
            routing_key="test.alert",
            user_id=user_id,
            headers=headers,
        ),
    )


def test_a_dead_letter_keeps_who_published_it_under_names_nothing_believes() -> None:
    message = incoming("dissemination", **{"x-send-id": "send-42", "x-submitted-by": "token:7"})
    headers = dead_letter_message(message, internal_error(KeyError("x"))).headers
    assert {k: v for k, v in headers.items() if k.startswith("x-original-")} == {
        "x-original-exchange": "alerts",
        "x-original-routing-key": "test.alert",
        "x-original-user-id": "dissemination",
        "x-original-submitted-by": "token:7",
        "x-original-send-id": "send-42",
    }
    # under their own names they would be believed from whoever republishes as the service
    assert "x-send-id" not in headers
    assert "x-submitted-by" not in headers
    # what no publisher the service believes could have sent is not kept: a value it would
    # not read (bytes), or one long enough to push the dead letter past an AMQP frame
    odd = incoming("nws-feed", **{"x-send-id": "s" * 513, "x-submitted-by": b"token:7"})
    kept = dead_letter_message(odd, internal_error(KeyError("x"))).headers
    assert kept["x-original-user-id"] == "nws-feed"
    assert not {"x-original-send-id", "x-original-submitted-by"} & set(kept)


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_republished_as_the_readme_says_a_dead_letter_comes_back_as_it_first_came(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    """A bug dead-letters an HTTP-ingested ad-hoc send's alert; once it is fixed, the dead
    letter is republished: by the user in x-original-user-id (here the service's own), with
    x-submitted-by and x-send-id put back from their x-original-* headers."""
    pipeline = service.consumer.processor
    seen: list[tuple[Submitter, str | None]] = []

    async def buggy_once(
        payload: Payload,
        submitter: Submitter = SERVICE,
        send_id: str | None = None,
        source: str = "amqp",
    ) -> IntakeResult:
        seen.append((submitter, send_id))
        if len(seen) == 1:
            raise RuntimeError("a bug")
        return IntakeResult()

    pipeline.process = buggy_once  # type: ignore[method-assign]
    exchange = await channel.get_exchange(settings.broker.exchange)
    body = cap_json_bytes("SEND-1")
    await exchange.publish(
        aio_pika.Message(
            body,
            content_type="application/json",
            message_id="send-1",
            user_id=settings.broker.username,
            headers={"x-submitted-by": "token:7", "x-send-id": "send-42"},
        ),
        routing_key="test.alert",
        mandatory=True,
    )
    (dead,) = await get_all(channel, settings.broker.dead_letter_queue, 1)
    assert rejection_of(dead)[0] == "internal_error"
    headers = dead.headers
    original_user = headers["x-original-user-id"]
    assert original_user == settings.broker.username  # the service's own: restore both
    await exchange.publish(
        aio_pika.Message(
            dead.body,
            content_type=dead.content_type,
            message_id=dead.message_id,
            user_id=str(original_user),
            headers={
                "x-submitted-by": headers["x-original-submitted-by"],
                "x-send-id": headers["x-original-send-id"],
            },
        ),
        routing_key=str(headers["x-original-routing-key"]),
        mandatory=True,
    )

    async def republished_seen() -> bool:
        return len(seen) == 2

    await wait_until(republished_seen, what="the republished message to be processed")
    assert seen[1] == seen[0] == (Submitter("token:7"), "send-42")
