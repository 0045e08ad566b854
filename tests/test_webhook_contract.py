"""The public webhook body (`schemas/webhook-v1.json`): every real CAP sample and every local
fixture, as each entitlement gets it, and the supervisor's notices, made by the body builder
and checked against the schema (closed: no undeclared or internal field); the README's
example body and its signature-checking example, extracted and exercised; and a delivery
verified with the `standardwebhooks` library."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from channels.base import OutboundMessage, Outcome
from channels.destinations import parse_networks
from channels.webhook import WebhookChannel, new_secret, sign
from channels.webhookbody import SCHEMA, alert_body, notice_body, public_alert
from core.alert import Tlp
from core.validation import validator_for
from dissemination.acks.tokens import AckSigner
from dissemination.controls.redaction import redact
from dissemination.delivery.messages import AckLinks, MessageBuilder
from dissemination.intake.decoding import DecodeLimits, decode_alerts
from dissemination.intake.normalize import HandlingDefaults
from testbed.alerts import cap_json
from testbed.webhooks import WebhookContract, assert_contract, contract_violations
from tests.claimedrows import claimed_row
from tests.samples import FIXTURES_DIR, sample_params

LIMITS = DecodeLimits(max_bytes=1_048_576, max_depth=32)
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
LOOPBACK = parse_networks(["127.0.0.1/32"])
LOCAL_FIXTURES = sorted((FIXTURES_DIR / "alerts").glob("*.json"))
INTERNAL_NAMES = ("msg_type", "sent_text", "tlp_defaulted", "source_format", "radius_km")


def documents(path: Path) -> list[dict[str, Any]]:
    """The stored documents of the alerts in a sample file."""
    content_type = "application/json" if path.suffix == ".json" else "application/cap+xml"
    return [
        alert.to_json()
        for alert in decode_alerts(path.read_bytes(), content_type, LIMITS, DEFAULTS)
    ]


def message(
    document: dict[str, Any],
    notice: dict[str, Any] | None = None,
    *,
    owes_ack: bool = True,
    delivery_id: str = "row-1",
) -> OutboundMessage:
    """The outbound message of one webhook row, as the delivery worker builds it."""
    links = AckLinks(AckSigner(("k" * 32,)), "https://alerts.example.org")
    row = claimed_row(id=delivery_id, alert_id=str(document["id"]), document=document)
    if owes_ack:
        expires = datetime(2099, 1, 1, tzinfo=UTC)
        row = replace(row, ack_token_id="ab" * 16, ack_code="0042", ack_expires_at=expires)
    return replace(MessageBuilder(links).build(row), notice=notice)


def check_every_body(document: dict[str, Any]) -> None:
    """The bodies of `document` as entitled and as redacted recipients get it, with and
    without an ack, and as cleared and uncleared supervisors' notices, all keep the contract;
    the channel's cached body is the builder's."""
    channel = WebhookChannel(())
    for version in (document, redact(document).document):
        for owes_ack in (False, True):
            plain = message(version, owes_ack=owes_ack)
            body = assert_contract(channel.body(plain))
            assert channel.body(plain) == alert_body(plain)
            assert ("ack" in body) is owes_ack
            assert not set(INTERNAL_NAMES) & set(keys(body)), "an internal name leaked"
        for cleared in (False, True):
            notice = {"about": "Night desk", "afterSeconds": 600, "cleared": cleared}
            assert_contract(notice_body(message(version, notice)))


def keys(value: Any) -> list[str]:
    """Every object key in a JSON value, at any depth."""
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in (key, *keys(item))]
    if isinstance(value, list):
        return [k for item in value for k in keys(item)]
    return []


@pytest.mark.parametrize(
    "path", [*sample_params("valid-1.2"), *sample_params("valid-1.1"), *sample_params("nws-json")]
)
def test_real_cap_samples_make_valid_bodies(path: Path) -> None:
    for document in documents(path):
        check_every_body(document)


@pytest.mark.parametrize("path", LOCAL_FIXTURES, ids=lambda p: p.name)
def test_local_kinds_make_valid_bodies(path: Path) -> None:
    [document] = documents(path)
    check_every_body(document)
    alert = public_alert(document)
    assert alert["kind"] == document["kind"]
    assert alert["details"] == document["details"]  # the kind's own fields, camelCase


def test_the_alert_is_public_and_camel_case() -> None:
    [document] = documents(FIXTURES_DIR / "alerts" / "bolo_full.json")
    alert = public_alert(document)
    assert alert["msgType"] == "Alert"
    assert alert["sent"] == "2024-06-02T21:15:00-04:00"
    assert alert["handling"] == {"tlp": "AMBER", "caveats": ["LES", "PII"]}
    assert alert["expires"] == "2024-06-09T21:15:00-04:00"
    [info] = alert["infos"]
    assert "instruction" not in info  # absent, never null
    area, point = info["areas"]
    assert area["areaDesc"].startswith("Example County")
    assert area["circles"] == [{"latitude": 38.84, "longitude": -77.31, "radiusKm": 25}]
    assert area["geocodes"][0] == {"valueName": "FIPS6", "value": "051059"}
    assert point["circles"][0]["radiusKm"] == 0


def test_a_withheld_field_is_absent_and_named() -> None:
    [document] = documents(FIXTURES_DIR / "alerts" / "bolo_full.json")
    alert = public_alert(redact(document).document)
    subject = alert["details"]["subjects"][0]
    assert "name" not in subject
    assert "dateOfBirth" not in subject
    assert alert["redaction"]["reason"] == "pii_not_entitled"
    assert "details.subjects[0].name" in alert["redaction"]["withheld"]
    assert "Richard P. Roe" not in json.dumps(alert)


def test_an_uncleared_supervisor_gets_only_the_id_and_marks() -> None:
    [document] = documents(FIXTURES_DIR / "alerts" / "bolo_full.json")
    notice = {"about": "Night desk", "afterSeconds": 600, "cleared": False}
    body = assert_contract(notice_body(message(document, notice)))
    assert body["contentWithheld"] is True
    assert body["alert"] == {"id": document["id"], "handling": public_alert(document)["handling"]}
    built = message(document, notice | {"cleared": True})
    cleared = assert_contract(notice_body(built))
    assert cleared["alert"] == public_alert(built.document)  # as the supervisor may see it
    assert (cleared["notAcknowledgedBy"], cleared["afterSeconds"]) == ("Night desk", 600)


def test_an_update_and_a_cancel_carry_their_references() -> None:
    for name in ("sar_update.json", "advisory_cancel.json"):
        [document] = documents(FIXTURES_DIR / "alerts" / name)
        alert = assert_contract(alert_body(message(document)))["alert"]
        assert alert["msgType"] in ("Update", "Cancel")
        assert alert["references"]
        assert set(alert["references"][0]) == {
            "sender",
            "identifier",
            "sent",
        }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda b: b["alert"]["handling"].update(tlp_defaulted=False), "tlp_defaulted"),
        (lambda b: b["alert"].update(sent_text=b["alert"]["sent"]), "sent_text"),
        (lambda b: b["alert"]["infos"][0].update(instruction=None), "None is not of type"),
        (lambda b: b.update(version="2"), "'1' was expected"),
        (lambda b: b.pop("deliveryId"), "'deliveryId' is a required property"),
        (lambda b: b["alert"].update(msgType="Update", infos={}), "is not of type 'array'"),
    ],
)
def test_the_contract_check_refuses_what_v1_does_not_allow(change: Any, problem: str) -> None:
    [document] = documents(FIXTURES_DIR / "alerts" / "sar_full.json")
    body = json.loads(alert_body(message(document)))
    change(body)
    problems = contract_violations(body)
    assert any(problem in p for p in problems), problems


def test_a_receivers_check_validates_each_shape_once_and_still_sees_a_bad_id() -> None:
    [document] = documents(FIXTURES_DIR / "alerts" / "sar_full.json")
    contract = WebhookContract()
    for row_id in ("row-1", "row-2", "row-3"):
        contract.check(alert_body(message(document, owes_ack=False, delivery_id=row_id)))
    assert (contract.checked, len(contract.valid_shapes)) == (3, 1)
    contract.assert_kept()
    contract.check(alert_body(message(document, owes_ack=False, delivery_id="")))
    with pytest.raises(AssertionError, match="deliveryId"):
        contract.assert_kept()


def test_the_published_schema_lets_receivers_ignore_fields_added_within_v1() -> None:
    [document] = documents(FIXTURES_DIR / "alerts" / "sar_full.json")
    body = json.loads(alert_body(message(document)))
    body["alert"]["infos"][0]["addedLater"] = "x"
    assert validator_for(SCHEMA).is_valid(body)
    assert contract_violations(body)  # the tests hold the service to what is declared


def test_the_old_internal_body_is_not_v1() -> None:
    [document] = documents(FIXTURES_DIR / "alerts" / "sar_full.json")
    assert contract_violations({"type": "alert", "deliveryId": "row-1", "alert": document})


# ---- the README's section (its blocks are claimed by tests/test_readme.py, which calls
# the checks here) ----------------------------------------------------------------------------


def example_body() -> str:
    """The README's example: a CAP alert that must be acknowledged, as its body is sent
    (pretty-printed, each point on one line)."""
    document = cap_json("FC-2026-0142", handling={"tlp": "GREEN"})
    [alert] = decode_alerts(json.dumps(document).encode(), "application/json", LIMITS, DEFAULTS)
    built = message(alert.to_json(), delivery_id="7d1f0b2c-5e0a-5b9e-8f43-6a2d9c1e4b70")
    text = json.dumps(json.loads(alert_body(built)), indent=2)
    return re.sub(r"\[\s+(-?[0-9.]+),\s+(-?[0-9.]+)\s+\]", r"[\1, \2]", text)  # points


def check_example_body(shown: str) -> None:
    """The README's example body keeps the contract and is what the builder makes."""
    assert_contract(json.loads(shown))
    assert shown == example_body(), "the README example is not the builder's:\n" + example_body()


def verification_example(code: str) -> Callable[[str, dict[str, str], bytes], Any]:
    """The README's `receive` function, from its Python example run as written."""
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    receive: Callable[[str, dict[str, str], bytes], Any] = namespace["receive"]
    return receive


def check_verification_example(code: str) -> None:
    """The README's example accepts a body signed as the service signs one, and refuses it
    changed or under another secret."""
    receive = verification_example(code)
    secret = new_secret()
    body = json.loads(example_body())
    raw = json.dumps(body).encode()
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": body["deliveryId"],
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, body["deliveryId"], timestamp, raw),
    }
    assert receive(secret, headers, raw) == body
    for wrong_secret, wrong_body in ((secret, raw + b" "), (new_secret(), raw)):
        with pytest.raises(WebhookVerificationError):
            receive(wrong_secret, headers, wrong_body)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []
    contract = WebhookContract()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        contract.check(body)
        received.append((dict(request.headers), body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/in", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/in", received
    await runner.cleanup()
    contract.assert_kept()


async def delivered(url: str, secret: str) -> None:
    [document] = documents(FIXTURES_DIR / "alerts" / "bolo_full.json")
    built = message(document)
    channel = WebhookChannel(LOOPBACK)
    try:
        result = await channel.send(replace(built, address=url, secret=secret))
    finally:
        await channel.close()
    assert result.outcome is Outcome.SENT


async def test_a_delivery_verifies_with_the_standardwebhooks_library(
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, received = receiver
    secret = new_secret()
    await delivered(url, secret)
    [(headers, body)] = received
    payload = Webhook(secret).verify(body, headers)
    assert payload == json.loads(body)
    assert payload["deliveryId"] == headers["webhook-id"] == "row-1"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"Ford", b"Fjord"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


async def test_the_readme_verification_example_verifies_a_real_delivery(
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    from tests.test_readme import BLOCKS

    [block] = [b for b in BLOCKS if b.label == "webhook-verify"]
    receive = verification_example(block.text)
    url, received = receiver
    secret = new_secret()
    await delivered(url, secret)
    [(headers, body)] = received
    payload = receive(secret, headers, body)
    assert payload["type"] == "alert"
    assert payload["alert"]["kind"] == "bolo"
    with pytest.raises(WebhookVerificationError):
        receive(secret, headers, body + b" ")
