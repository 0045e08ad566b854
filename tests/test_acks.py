"""Acknowledgment end to end through the real channels: the link a stakeholder is emailed
(GET changes nothing, POST acknowledges once), SMS replies signed with the twilio SDK's own
request validator (valid, forged, replayed, another number's code), the token a webhook
receiver is sent, and an administrator acknowledging on someone's behalf. Then the pure
parts: token signing and rotation, and the SMS reply grammar."""

from __future__ import annotations

import base64
import binascii
import json
import re
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web
from sqlalchemy import select

from channels.smsinbound import AckReply, ack_reply
from core.errors import ConfigError
from dissemination.acks.tokens import AckSigner, new_token_id
from dissemination.acks.tracking import AckStore
from dissemination.api.acks import AckEndpoints, add_ack_routes
from dissemination.api.errors import error_middleware
from dissemination.api.tokens import Role, TokenStore
from dissemination.api.twiliohooks import INBOUND_HOOK
from dissemination.errors import TokenRefused
from dissemination.service import Service
from dissemination.settings import Settings, StoreSettings, load_settings
from dissemination.store.database import Database
from dissemination.store.tables import acks, audit_log, service_secrets
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_settings_fixture,
    post_inbound,
    publish_alert,
    settled,
    sinks_fixture,
)
from tests.people import enrol

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY_A, KEY_B = "a" * 40, "b" * 40


async def ack_row(service: Service, alert_id: str, stakeholder_id: str) -> dict[str, Any]:
    assert service.database is not None
    async with service.database.reading() as conn:
        row = (
            (
                await conn.execute(
                    select(acks).where(
                        acks.c.alert_id == alert_id, acks.c.stakeholder_id == stakeholder_id
                    )
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


async def admin_token(service: Service, role: Role = Role.ADMIN) -> str:
    assert service.database is not None
    _, secret = await TokenStore(service.database).create(f"{role}-1", role, datetime.now(UTC))
    return secret


def ack_link(text: str) -> str:
    match = re.search(r"(http://127\.0\.0\.1:\d+/ack/[A-Za-z0-9_-]+)", text)
    assert match, text
    return match.group(1)


@pytest.mark.slow
async def test_link_get_changes_nothing_and_post_acknowledges_once(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    person = await enrol(service, "Dana Reed", {"email": "dana@example.org"}, ack_required=True)
    alert_id = await publish_alert(channel, settings, "ACK-LINK-1")
    await settled(service, alert_id, 1)
    mail = (await sinks.smtp.message(0)).parsed()
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = ack_link(text)
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # a link scanner, then the person
            async with session.get(link) as response:
                page = await response.text()
                assert response.status == 200
                assert "Confirm receipt" in page
                assert "TLP:GREEN" in page
                assert response.headers["Referrer-Policy"] == "no-referrer"
        assert (await ack_row(service, alert_id, person.id))["acknowledged_at"] is None
        async with session.post(link, data={"comment": " on my way "}) as response:
            assert response.status == 200
            assert "Acknowledged" in await response.text()
        row = await ack_row(service, alert_id, person.id)
        assert (row["channel"], row["comment"], row["actor_name"]) == (
            "link",
            "on my way",
            "Dana Reed",
        )
        first = row["acknowledged_at"]
        async with session.post(link, data={"comment": "again"}) as response:
            assert response.status == 200
            assert "already confirmed" in await response.text()
        row = await ack_row(service, alert_id, person.id)
        assert (row["acknowledged_at"], row["comment"]) == (first, "on my way")
        async with session.get(link) as response:
            assert "Already acknowledged" in await response.text()


@pytest.mark.slow
async def test_bad_tokens_get_403_410_404_pages_never_a_trace(
    service: Service, sinks: Sinks
) -> None:
    base = sinks.public_url + "/ack/"
    assert service.database is not None
    async with service.database.reading() as conn:
        key = await conn.scalar(select(acks.c.token_id).limit(1))
    assert key is None  # nothing issued: every well-signed token names nothing
    signer = AckSigner((await _generated_key(service),))
    live = signer.sign(new_token_id(), datetime.now(UTC) + timedelta(hours=1))
    expired = signer.sign(new_token_id(), datetime.now(UTC) - timedelta(seconds=1))
    tampered = live[:-3] + ("AAA" if live[-3:] != "AAA" else "BBB")
    cases = {
        tampered: 403,
        "not-a-token": 403,
        "%00%ff": 403,
        "A" * 400: 403,
        AckSigner((KEY_B,)).sign(new_token_id(), T0 + timedelta(days=3650)): 403,
        expired: 410,
        live: 404,
    }
    async with aiohttp.ClientSession() as session:
        for token, status in cases.items():
            for method in ("GET", "POST"):
                async with session.request(method, base + token) as response:
                    body = await response.text()
                    assert response.status == status, (token, method, body)
                    assert response.content_type == "text/html"
                    assert "Traceback" not in body
            async with session.post(
                sinks.public_url + "/api/v1/acks", json={"token": token}
            ) as response:
                if len(token) > 200:  # longer than any token: refused by the body's schema
                    assert response.status == 422
                    continue
                assert response.status == status
                error = (await response.json())["error"]
                assert error["code"] == {403: "invalid_token", 410: "token_expired"}.get(
                    status, "not_found"
                )


async def _generated_key(service: Service) -> str:
    assert service.database is not None
    async with service.database.reading() as conn:
        return str(await conn.scalar(select(service_secrets.c.value)))


@pytest.mark.slow
async def test_sms_replies_acknowledge_by_code_or_newest(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    mine, theirs = "+12025550161", "+12025550162"
    me = await enrol(service, "Kai", {"sms": mine}, ack_required=True)
    other = await enrol(service, "Lee", {"sms": theirs}, ack_required=True)
    first = await publish_alert(channel, settings, "ACK-SMS-1")
    await settled(service, first, 2)
    second = await publish_alert(channel, settings, "ACK-SMS-2")
    await settled(service, second, 2)
    texts = {(m["to"], m["body"]) for m in sinks.twilio.messages}
    codes = {
        (to, re.search(r"Reply ACK (\d{4})", body).group(1))  # type: ignore[union-attr]
        for to, body in texts
    }
    assert len(codes) == 4
    first_code = (await ack_row(service, first, me.id))["code"]
    their_code = (await ack_row(service, second, other.id))["code"]
    assert (mine, first_code) in codes

    # A forged signature changes nothing.
    await post_inbound(sinks, mine, f"ACK {first_code}", forged=True)
    assert (await ack_row(service, first, me.id))["acknowledged_at"] is None

    # Another number's code acknowledges nothing and is audited.
    if their_code not in {(await ack_row(service, a, me.id))["code"] for a in (first, second)}:
        reply = await post_inbound(sinks, mine, f"ack {their_code}")
        assert f"No alert with code {their_code}" in reply
        assert (await ack_row(service, second, other.id))["acknowledged_at"] is None
        assert service.database is not None
        async with service.database.reading() as conn:
            refused = await conn.scalar(
                select(audit_log.c.reason).where(audit_log.c.action == "ack_refused")
            )
        assert refused == "the code belongs to an alert sent to another number"

    # With a code: that alert, not the newer one.
    reply = await post_inbound(sinks, mine, f"ACK {first_code}")
    assert "Acknowledged:" in reply
    assert (await ack_row(service, first, me.id))["channel"] == "sms"
    assert (await ack_row(service, second, me.id))["acknowledged_at"] is None
    # Repeated, and the very same signed request replayed: harmless.
    assert "Already acknowledged" in await post_inbound(sinks, mine, f"ACK {first_code}")
    url = sinks.public_url + INBOUND_HOOK
    form, headers = sinks.twilio.inbound_sms(url, from_=mine, body=f"ack {first_code}")
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(url, data=form, headers=headers) as response:
                assert response.status == 200
                assert "Already acknowledged" in await response.text()
    assert (await ack_row(service, first, me.id))["channel"] == "sms"
    # Without a code: the newest unacknowledged one. Twilio retrying the request (our first
    # answer lost on the way) gets the same answer, so the person is still told it worked.
    form, headers = sinks.twilio.inbound_sms(url, from_=mine, body="yes")
    async with aiohttp.ClientSession() as session:
        replies = []
        for _ in range(2):
            async with session.post(url, data=form, headers=headers) as response:
                replies.append(await response.text())
    assert "Acknowledged:" in replies[0]
    assert replies[1] == replies[0]
    acknowledged = await ack_row(service, second, me.id)
    assert acknowledged["acknowledged_at"] is not None
    assert "no alert waiting" in await post_inbound(sinks, mine, "1")
    # The opt-out keywords still work.
    assert "Reply STOP" in await post_inbound(sinks, theirs, "HELP")


@pytest.mark.slow
async def test_webhook_receivers_acknowledge_with_the_token_they_were_sent(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    person = await enrol(
        service, "Ops desk", {"webhook": sinks.hooks.base + "ok"}, ack_required=True
    )
    plain = await enrol(service, "No ack", {"webhook": sinks.hooks.base + "plain"})
    alert_id = await publish_alert(channel, settings, "ACK-HOOK-1")
    await settled(service, alert_id, 2)
    bodies = {json.loads(body)["deliveryId"]: json.loads(body) for _, body in sinks.hooks.requests}
    with_ack = [b for b in bodies.values() if "ack" in b]
    assert len(with_ack) == 1
    assert len(bodies) == 2
    token = with_ack[0]["ack"]["token"]
    assert with_ack[0]["ack"]["url"].endswith("/ack/" + token)
    url = sinks.public_url + "/api/v1/acks"
    async with aiohttp.ClientSession() as session:
        for bad in ({"token": token, "extra": 1}, {"comment": "x"}, [token], {"token": 5}):
            async with session.post(url, json=bad) as response:
                assert response.status == 422, bad
        async with session.post(url, data=b"{not json") as response:
            assert response.status == 400
        async with session.post(url, json={"token": token, "comment": "seen"}) as response:
            assert response.status == 201
            answer = await response.json()
        assert (answer["channel"], answer["comment"], answer["alreadyAcknowledged"]) == (
            "webhook",
            "seen",
            False,
        )
        async with session.post(url, json={"token": token}) as response:
            assert response.status == 200
            assert (await response.json())["alreadyAcknowledged"] is True
    assert (await ack_row(service, alert_id, person.id))["channel"] == "webhook"
    assert service.database is not None
    async with service.database.reading() as conn:
        owed = await conn.scalar(select(acks.c.alert_id).where(acks.c.stakeholder_id == plain.id))
    assert owed is None


@pytest.mark.slow
async def test_an_administrator_acknowledges_on_behalf_with_an_audited_reason(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    person = await enrol(service, "Field unit", {"email": "unit@example.org"}, ack_required=True)
    alert_id = await publish_alert(channel, settings, "ACK-ADMIN-1")
    await settled(service, alert_id, 1)
    url = f"{sinks.public_url}/api/v1/alerts/{alert_id}/acks"
    body = {"stakeholderId": person.id, "reason": "confirmed by phone", "comment": "radio"}
    viewer = {"Authorization": "Bearer " + await admin_token(service, Role.VIEWER)}
    admin = {"Authorization": "Bearer " + await admin_token(service)}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as response:
            assert response.status == 401
        async with session.post(url, json=body, headers=viewer) as response:
            assert response.status == 403
        async with session.post(url, json=body | {"reason": ""}, headers=admin) as response:
            assert response.status == 422
        other = f"{sinks.public_url}/api/v1/alerts/no-such-alert/acks"
        async with session.post(other, json=body, headers=admin) as response:
            assert response.status == 404
        async with session.post(url, json=body, headers=admin) as response:
            assert response.status == 201
    row = await ack_row(service, alert_id, person.id)
    assert (row["channel"], row["reason"], row["actor_name"], row["comment"]) == (
        "admin",
        "confirmed by phone",
        "admin-1",
        "radio",
    )
    assert service.database is not None
    async with service.database.reading() as conn:
        entry = (
            (await conn.execute(select(audit_log).where(audit_log.c.action == "acknowledge")))
            .mappings()
            .one()
        )
    assert (entry["actor_name"], entry["reason"]) == ("admin-1", "confirmed by phone")


class OneAck(AckStore):
    """An AckStore that knows one unacknowledged row and is never asked to record."""

    async def by_token(self, token_id: str) -> dict[str, Any] | None:
        document = {"id": "a-1", "kind": "cap", "infos": [{"headline": "Flood"}]}
        return {"alert_id": "a-1", "stakeholder_id": "s-1", "document": document} | {
            "acknowledged_at": None
        }

    async def acknowledge(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a form that cannot be read must acknowledge nothing")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded; charset=nope", b"comment=x"),
        ("application/x-www-form-urlencoded", b"comment=\xff"),
        ("multipart/form-data", b"comment=x"),
        ("multipart/form-data; boundary=zz", b"--zz\r\nbroken"),
        ("multipart/form-data; boundary=zz", b"--zz\r\n\r\nv\r\n--zz--\r\n"),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="comment"\r\n'
            b"Content-Transfer-Encoding: xx\r\n\r\nv\r\n--zz--\r\n",
        ),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="comment"; filename="c.txt"\r\n'
            b"\r\nv\r\n--zz--\r\n",
        ),
    ],
)
async def test_an_ack_form_that_cannot_be_read_is_a_400_page(
    tmp_path: Path, content_type: str, body: bytes
) -> None:
    database = Database.from_settings(
        StoreSettings(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", 1, 0.05, 0.2), tmp_path
    )
    signer = AckSigner((KEY_A,))
    app = web.Application(middlewares=[error_middleware])
    add_ack_routes(app, AckEndpoints(signer, OneAck(database), lambda: T0))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    token = signer.sign(new_token_id(), T0 + timedelta(hours=1))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://{host}:{port}/ack/{token}",
                data=body,
                headers={"Content-Type": content_type},
            ) as response,
        ):
            assert response.status == 400
            assert response.content_type == "text/html"
            assert "could not be read" in await response.text()
    finally:
        await runner.cleanup()
        await database.close()


def test_tokens_verify_round_trip_and_carry_no_personal_data() -> None:
    signer = AckSigner((KEY_A,))
    token_id = new_token_id()
    token = signer.sign(token_id, T0 + timedelta(hours=1))
    assert len(token) == 51
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    verified = signer.verify(token, T0)
    assert (verified.token_id, verified.expires_at) == (token_id, T0 + timedelta(hours=1))
    assert len(bytes.fromhex(token_id)) == 16


def test_expired_and_tampered_tokens_are_refused() -> None:
    signer = AckSigner((KEY_A,))
    token = signer.sign(new_token_id(), T0)
    with pytest.raises(TokenRefused) as expired:
        signer.verify(token, T0)
    assert expired.value.status == 410
    for position in range(len(token)):
        flipped = (
            token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
        )
        with pytest.raises(TokenRefused) as tampered:
            signer.verify(flipped, T0 - timedelta(hours=1))
        assert tampered.value.status == 403


def _leniently_decoded(token: str) -> bytes | None:
    """What a lenient base64url decoder makes of `token` (padding added, other characters of
    either alphabet accepted, trailing bits ignored), or None if even it refuses."""
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None


def _one_character_variants(token: str) -> set[str]:
    """Every text one character away from `token`: a character replaced, inserted or removed."""
    characters = string.printable + "\u00a0\u00e9\uff0b\uff1d\u2212"
    variants: set[str] = set()
    for position in range(len(token) + 1):
        head, tail = token[:position], token[position:]
        variants.update(head + c + tail for c in characters)
        if tail:
            variants.add(head + tail[1:])
            variants.update(head + c + tail[1:] for c in characters)
    variants.discard(token)
    return variants


def test_only_the_canonical_spelling_of_a_token_verifies() -> None:
    signer = AckSigner((KEY_A,))
    # an id whose bytes come out as "----" and "____", so both URL-safe characters occur
    token = signer.sign("00fbefbeffffff" + "0123456789abcdef01", T0 + timedelta(hours=1))
    assert "----____" in token
    variants = _one_character_variants(token)
    same_bytes = {v for v in variants if _leniently_decoded(v) == _leniently_decoded(token)}
    assert token + "=" in same_bytes
    assert sum(v[:-1] == token[:-1] for v in same_bytes) >= 3  # the last character's spare bits
    assert any("+" in v for v in same_bytes)
    assert any("/" in v for v in same_bytes)
    for variant in sorted(variants):
        with pytest.raises(TokenRefused) as refused:
            signer.verify(variant, T0)
        assert refused.value.status == 403, variant


def test_a_retired_key_verifies_only_during_its_grace_period() -> None:
    old = AckSigner((KEY_A,)).sign(new_token_id(), T0 + timedelta(days=2))
    rotated = AckSigner((KEY_B, KEY_A), retired_until=T0 + timedelta(days=1))
    assert rotated.verify(old, T0).expires_at == T0 + timedelta(days=2)
    with pytest.raises(TokenRefused) as after_grace:
        rotated.verify(old, T0 + timedelta(days=1))
    assert after_grace.value.status == 410
    with pytest.raises(TokenRefused) as dropped:
        AckSigner((KEY_B,)).verify(old, T0)
    assert dropped.value.status == 403
    new = rotated.sign(new_token_id(), T0 + timedelta(days=2))
    assert AckSigner((KEY_B,)).verify(new, T0 + timedelta(days=1)).token_id


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("ACK", AckReply(None)),
        (" ack 4821 ", AckReply("4821")),
        ("Ack #4821", AckReply("4821")),
        ("ACK4821", AckReply("4821")),
        ("1", AckReply(None)),
        ("yes", AckReply(None)),
        ("YES 123456", AckReply("123456")),
        ("4821", AckReply("4821")),
        ("ok.", AckReply(None)),
        ("STOP", None),
        ("ACK 48", None),
        ("acknowledge this please", None),
        ("", None),
    ],
)
def test_sms_reply_grammar(body: str, expected: AckReply | None) -> None:
    assert ack_reply(body) == expected


def test_signing_keys_come_from_the_environment_and_are_checked(tmp_path: Path) -> None:
    env = {"DISSEMINATION_ACK_SIGNING_KEYS": f"{KEY_B},{KEY_A}"}
    until = "2026-12-31T00:00:00+00:00"
    settings = load_settings(env | {"DISSEMINATION_ACK_RETIRED_KEYS_UNTIL": until})
    assert settings.ack.signing_keys == (KEY_B, KEY_A)
    assert settings.ack.retired_keys_deadline == datetime(2026, 12, 31, tzinfo=UTC)
    assert KEY_A not in repr(settings)
    with pytest.raises(ConfigError, match="at least 32 characters"):
        load_settings({"DISSEMINATION_ACK_SIGNING_KEYS": "short"})
    with pytest.raises(ConfigError, match="UTC offset"):
        load_settings({"DISSEMINATION_ACK_RETIRED_KEYS_UNTIL": "2026-12-31T00:00:00"})
    config = tmp_path / "keys.toml"
    config.write_text(f'[ack]\nsigning_keys = ["{KEY_A}"]\n')
    with pytest.raises(ConfigError, match="only from the environment"):
        load_settings({}, config)
