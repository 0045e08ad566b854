"""Intake end to end against the real broker and both stores: what is valid is stored and
acked, what is not is dead-lettered with a named reason, and nothing is lost or doubled."""

from __future__ import annotations

import json

import pytest
from aio_pika.abc import AbstractChannel

from core.alert import Alert
from core.errors import MAX_DETAIL_CHARS, ErrorDetail, RejectedInput
from dissemination.intake.consumer import errors_header
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.service import Service
from dissemination.settings import Settings
from testbed.alerts import cap_json, cap_json_bytes, cap_xml
from tests.brokerutil import (
    close_connections,
    get_all,
    open_connection,
    publish,
    queue_depth,
    rejection_of,
    wait_until,
)
from tests.logcapture import LogLines
from tests.pg import psql
from tests.samples import FIXTURES_DIR, SAMPLES_DIR, sample_files

pytestmark = pytest.mark.slow


def ledger_of(service: Service) -> Ledger:
    assert service.database is not None
    return Ledger(service.database)


async def wait_for_counts(service: Service, **expected: int) -> dict[str, int]:
    ledger = ledger_of(service)

    async def reached() -> bool:
        counts = await ledger.counts()
        return all(counts[k] >= v for k, v in expected.items())

    await wait_until(reached, what=f"ledger counts {expected}")
    return await ledger.counts()


async def test_every_format_is_stored_and_acked(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    bodies: list[tuple[bytes, str | None]] = [
        (cap_xml(), "application/cap+xml"),
        (cap_xml("TEST-XML-SNIFFED"), None),
        (cap_json_bytes("TEST-JSON"), "application/json"),
        ((FIXTURES_DIR / "nws" / "two_features.json").read_bytes(), "application/geo+json"),
    ]
    local = sorted((FIXTURES_DIR / "alerts").glob("*_full.json"))
    bodies += [(path.read_bytes(), "application/json") for path in local]
    for body, content_type in bodies:
        await publish(channel, settings, body, content_type)
    expected_alerts = len(bodies) + 1  # the NWS collection holds two features
    counts = await wait_for_counts(service, alerts=expected_alerts)
    assert counts == {"alerts": expected_alerts, "rejections": 0, "quarantine": 0}
    assert await queue_depth(channel, settings.broker.inbound_queue) == 0
    assert await queue_depth(channel, settings.broker.dead_letter_queue) == 0


async def test_duplicate_publishes_store_one_alert(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    for _ in range(3):
        await publish(channel, settings, cap_json_bytes("DUP-1"))
    pretty = json.dumps(cap_json("DUP-1"), indent=2).encode()
    await publish(channel, settings, pretty)
    await publish(channel, settings, cap_json_bytes("AFTER-DUPS"))
    counts = await wait_for_counts(service, alerts=2)
    await wait_until(lambda: _drained(channel, settings), what="inbound queue drained")
    assert counts == {"alerts": 2, "rejections": 0, "quarantine": 0}


async def _drained(channel: AbstractChannel, settings: Settings) -> bool:
    return await queue_depth(channel, settings.broker.inbound_queue) == 0


async def test_conflicting_duplicate_is_quarantined(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    await publish(channel, settings, cap_json_bytes("CONFLICT-1"))
    await wait_for_counts(service, alerts=1)
    changed = cap_json("CONFLICT-1")
    changed["info"][0]["severity"] = "Minor"
    await publish(channel, settings, json.dumps(changed).encode())
    counts = await wait_for_counts(service, quarantine=1)
    assert counts == {"alerts": 1, "rejections": 0, "quarantine": 1}
    row = await ledger_of(service).alert_row(_id_of(cap_json("CONFLICT-1")))
    assert row is not None
    assert row["document"]["infos"][0]["severity"] == "Severe"


def _id_of(document: dict[str, str]) -> str:
    from core.alert import alert_id_for

    return alert_id_for(document["sender"], document["identifier"], document["sent"])


async def test_draft_and_expired_alerts_are_recorded_not_released(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    draft = cap_json("DRAFT-1", status="Draft")
    expired = cap_json("EXPIRED-1")
    expired["info"][0]["expires"] = "2020-01-01T00:00:00-00:00"
    for document in (draft, expired):
        await publish(channel, settings, json.dumps(document).encode())
    await wait_for_counts(service, alerts=2)
    ledger = ledger_of(service)
    states = {
        name: (await ledger.alert_row(_id_of(doc)) or {}).get("state")
        for name, doc in (("draft", draft), ("expired", expired))
    }
    assert states == {"draft": "draft", "expired": "expired"}


_HUGE_CIRCLE = "38.5,-120.1 " + "9" * 400


def _many_bad_features(count: int) -> bytes:
    """An NWS collection whose every feature has errors that quote long values."""
    collection = json.loads((FIXTURES_DIR / "nws" / "two_features.json").read_text())
    feature = collection["features"][0]
    for name in ("severity", "certainty", "urgency", "status"):
        feature["properties"][name] = name + " x" * 200
    collection["features"] = [feature] * count
    return json.dumps(collection).encode()


BAD_INPUTS: list[tuple[str, bytes, str | None, str]] = [
    ("empty body", b"", None, "unrecognized_format"),
    ("plain text", b"hello", None, "unrecognized_format"),
    ("unsupported content type", cap_json_bytes(), "text/plain", "unsupported_content_type"),
    ("image content type", b"\x89PNG", "image/png", "unsupported_content_type"),
    ("truncated json", b'{"identifier": "x"', "application/json", "invalid_json"),
    ("json array", b"[1, 2]", "application/json", "unrecognized_format"),
    ("json string", b'"alert"', "application/json", "unrecognized_format"),
    (
        "duplicate key",
        b'{"identifier": "a", "identifier": "b"}',
        "application/json",
        "duplicate_key",
    ),
    ("NaN", b'{"identifier": "a", "x": NaN}', "application/json", "non_finite_number"),
    ("Infinity", b'{"identifier": "a", "x": -Infinity}', "application/json", "non_finite_number"),
    ("invalid utf-8", b'{"identifier": "\xff\xfe"}', "application/json", "invalid_utf8"),
    ("lone surrogate", b'{"identifier": "\\ud800"}', "application/json", "invalid_unicode"),
    ("deep nesting", b'{"a":' * 100 + b"1" + b"}" * 100, "application/json", "nesting_too_deep"),
    ("very deep nesting", b"[" * 50000 + b"]" * 50000, "application/json", "nesting_too_deep"),
    (
        "oversize body",
        b'{"pad": "' + b"x" * 1_100_000 + b'"}',
        "application/json",
        "body_too_large",
    ),
    ("unknown kind", b'{"kind": "rumour", "identifier": "r"}', "application/json", "unknown_kind"),
    ("json object of nothing", b'{"hello": "world"}', "application/json", "unrecognized_format"),
    (
        "cap missing status",
        json.dumps({k: v for k, v in cap_json().items() if k != "status"}).encode(),
        "application/json",
        "schema_violation",
    ),
    (
        "cap bad urgency",
        json.dumps(cap_json(info=[dict(cap_json()["info"][0], urgency="Soon")])).encode(),
        "application/json",
        "schema_violation",
    ),
    (
        "cap unknown field",
        json.dumps(cap_json(colour="red")).encode(),
        "application/json",
        "schema_violation",
    ),
    (
        "cap bad sent",
        json.dumps(cap_json(sent="yesterday")).encode(),
        "application/json",
        "schema_violation",
    ),
    (
        "cap update without references",
        json.dumps(cap_json(msgType="Update")).encode(),
        "application/json",
        "schema_violation",
    ),
    (
        "cap bad tlp",
        json.dumps(cap_json(handling={"tlp": "PURPLE"})).encode(),
        "application/json",
        "schema_violation",
    ),
    ("xml not well formed", b"<alert><identifier>x</alert>", "application/cap+xml", "invalid_xml"),
    (
        "xml entity bomb",
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><alert>&x;</alert>',
        "application/cap+xml",
        "xml_forbidden_construct",
    ),
    (
        "xml external entity",
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><alert>&x;</alert>',
        "application/cap+xml",
        "xml_forbidden_construct",
    ),
    ("xml not cap", b"<rss><channel/></rss>", "application/xml", "not_cap"),
    (
        "cap 1.0",
        b'<alert xmlns="http://www.incident.com/cap/1.0"><identifier>x</identifier></alert>',
        "application/cap+xml",
        "unsupported_cap_version",
    ),
    (
        "nws without features",
        b'{"type": "FeatureCollection", "features": []}',
        "application/geo+json",
        "invalid_nws_geojson",
    ),
    ("xml declared as json", cap_xml(), "application/json", "invalid_json"),
    # Inputs that once passed decoding and then failed on every delivery:
    (
        "integer of 5000 digits",
        cap_json_bytes()[:-1] + b', "n": ' + b"1" * 5000 + b"}",
        "application/json",
        "number_out_of_range",
    ),
    (
        "number overflowing a double",
        b'{"identifier": "x", "n": 1e999}',
        None,
        "number_out_of_range",
    ),
    (
        "sent beyond year 9999 in UTC",
        json.dumps(cap_json(sent="9999-12-31T23:59:59-23:59")).encode(),
        "application/json",
        "invalid_field",
    ),
    (
        "circle radius overflowing a double",
        json.dumps(
            cap_json(
                info=[
                    dict(cap_json()["info"][0], area=[{"areaDesc": "x", "circle": [_HUGE_CIRCLE]}])
                ]
            )
        ).encode(),
        "application/json",
        "invalid_field",
    ),
    ("NUL in a string", json.dumps(cap_json("NUL\u0000")).encode(), None, "nul_character"),
    (
        "content type longer than the store holds",
        cap_json_bytes(),
        "application/json; profile=" + "p" * 190,  # an AMQP shortstr holds 255
        "unsupported_content_type",
    ),
    (
        "schema violation quoting a value larger than an AMQP frame",
        json.dumps(cap_json("a b" * 200_000)).encode(),
        "application/json",
        "schema_violation",
    ),
    (
        "schema violations in 150 features, together larger than an AMQP frame",
        _many_bad_features(150),
        "application/geo+json",
        "schema_violation",
    ),
    (
        "xinclude in utf-16",
        cap_xml()
        .decode()
        .replace('encoding="UTF-8"', 'encoding="UTF-16"')
        .replace(
            "<scope>", '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="x"/><scope>'
        )
        .encode("utf-16"),
        None,
        "xml_forbidden_construct",
    ),
]


async def test_bad_inputs_are_dead_lettered_with_a_named_reason(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    assert len(BAD_INPUTS) >= 34
    for index, (_name, body, content_type, _reason) in enumerate(BAD_INPUTS):
        await publish(channel, settings, body, content_type, message_id=f"bad-{index}")
    await publish(channel, settings, cap_json_bytes("STILL-CONSUMING"))
    dead = await get_all(channel, settings.broker.dead_letter_queue, len(BAD_INPUTS))
    reasons = {m.message_id: rejection_of(m)[0] for m in dead}
    expected = {f"bad-{i}": reason for i, (_n, _b, _c, reason) in enumerate(BAD_INPUTS)}
    assert reasons == expected
    for message in dead:
        _reason, errors = rejection_of(message)
        assert errors
        assert all({"path", "message"} <= set(e) for e in errors)
    counts = await wait_for_counts(service, alerts=1, rejections=len(BAD_INPUTS))
    assert counts == {"alerts": 1, "rejections": len(BAD_INPUTS), "quarantine": 0}
    assert await queue_depth(channel, settings.broker.inbound_queue) == 0


async def test_an_unexpected_failure_is_dead_lettered_once_as_internal_error(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    logged: LogLines,
) -> None:
    """A bug (here: any exception the pipeline does not expect) must neither loop until the
    delivery limit nor drop the message: it goes to alerts.dead at once, named."""
    assert service.consumer is not None
    pipeline = service.consumer.processor
    real_parse = pipeline.parse
    attempts: list[bytes] = []

    def failing_parse(payload: Payload) -> list[Alert]:
        if payload.body.startswith(b'{"identifier": "BUG-1"'):
            attempts.append(payload.body)
            raise RuntimeError("a bug")
        return real_parse(payload)

    pipeline.parse = failing_parse  # type: ignore[method-assign]
    body = cap_json_bytes("BUG-1")
    await publish(channel, settings, body, message_id="bug-1")
    await publish(channel, settings, cap_json_bytes("AFTER-BUG"))
    (dead,) = await get_all(channel, settings.broker.dead_letter_queue, 1)
    reason, errors = rejection_of(dead)
    assert (dead.message_id, dead.body, reason) == ("bug-1", body, "internal_error")
    assert "RuntimeError" in errors[0]["message"]
    assert "a bug" not in errors[0]["message"]  # exception texts may quote the input
    counts = await wait_for_counts(service, alerts=1, rejections=1)
    assert counts == {"alerts": 1, "rejections": 1, "quarantine": 0}
    assert len(attempts) == 1
    (failed,) = logged.named("intake_failed_unexpectedly", message_id="bug-1")
    assert failed["level"] == "error"
    assert "RuntimeError: a bug" in failed["exception"]  # the traceback, for whoever fixes it


def test_the_errors_header_fits_in_an_amqp_frame_whatever_the_errors() -> None:
    astral = "\U0001f300" * MAX_DETAIL_CHARS  # 12 bytes each once JSON escapes it
    rejected = RejectedInput("schema_violation", [ErrorDetail(astral, astral)] * 100)
    header = errors_header(rejected)
    assert len(header.encode()) <= 32_768
    listed = json.loads(header)
    assert listed[-1]["message"].startswith("and ")
    assert listed[-1]["message"].endswith(" more problems")


async def test_consumer_recovers_when_the_broker_closes_its_connection(
    service: Service, channel: AbstractChannel, settings: Settings, vhost: str
) -> None:
    total = 200
    for i in range(total // 2):
        await publish(channel, settings, cap_json_bytes(f"RECOVER-{i}"))
    await wait_for_counts(service, alerts=10)
    close_connections(vhost)
    assert service.broker is not None
    await wait_until(lambda: _connected(service), what="service reconnected")
    publisher = await open_connection(settings)
    try:
        fresh = await publisher.channel(publisher_confirms=True)
        for i in range(total // 2, total):
            await publish(fresh, settings, cap_json_bytes(f"RECOVER-{i}"))
        counts = await wait_for_counts(service, alerts=total)
        assert counts == {"alerts": total, "rejections": 0, "quarantine": 0}
        await wait_until(lambda: _drained(fresh, settings), what="inbound queue drained")
    finally:
        await publisher.close()


async def _connected(service: Service) -> bool:
    broker = service.broker
    return broker is not None and broker.connected.is_set() and not broker.is_closed


async def test_store_outage_requeues_and_nothing_is_rejected(
    store_kind: str, service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    if store_kind != "postgresql":
        pytest.skip("the outage is made by closing the PostgreSQL database to connections")
    database_name = settings.store.url.rsplit("/", 1)[1]
    psql(f'ALTER DATABASE "{database_name}" ALLOW_CONNECTIONS false')
    psql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database_name}'"
    )
    try:
        for i in range(5):
            await publish(channel, settings, cap_json_bytes(f"OUTAGE-{i}"))
        assert service.consumer is not None
        consumer = service.consumer

        async def backing_off() -> bool:
            return consumer.backoff.failures >= 3

        await wait_until(backing_off, what="the consumer to back off")
    finally:
        psql(f'ALTER DATABASE "{database_name}" ALLOW_CONNECTIONS true')
    counts = await wait_for_counts(service, alerts=5)
    assert counts == {"alerts": 5, "rejections": 0, "quarantine": 0}
    assert await queue_depth(channel, settings.broker.dead_letter_queue) == 0


EXPECTED_SAMPLE_REASONS = {
    "google-cap-library__invalid.cap": "schema_violation",
    "google-cap-library__canada_errors.cap": "schema_violation",
    "google-cap-library__noaa_errors.cap": "schema_violation",
    "google-cap-library__xee.cap": "xml_forbidden_construct",
}


async def test_public_samples_are_accepted_or_rejected_as_labelled(
    service: Service, channel: AbstractChannel, settings: Settings
) -> None:
    valid = sample_files("valid-1.2") + sample_files("valid-1.1")
    nws = sample_files("nws-json")
    invalid = sample_files("invalid")
    if not valid:
        pytest.skip(f"public CAP sample corpus not found at {SAMPLES_DIR}")
    for path in valid + nws + invalid:
        await publish(channel, settings, path.read_bytes(), None, message_id=path.name)
    # The corpus holds the same alert more than once: the CAP 1.1 and 1.2 appendix examples
    # share (sender, identifier, sent) with different content, so later ones are quarantined.
    assert service.consumer is not None
    processor = service.consumer.processor
    first_hash: dict[str, str] = {}
    conflicts = 0
    for path in valid + nws:
        for alert in processor.parse(Payload(path.read_bytes(), "")):
            known = first_hash.setdefault(alert.id, alert.content_hash())
            conflicts += known != alert.content_hash()
    dead = await get_all(channel, settings.broker.dead_letter_queue, len(invalid))
    assert {m.message_id: rejection_of(m)[0] for m in dead} == EXPECTED_SAMPLE_REASONS
    counts = await wait_for_counts(service, alerts=len(first_hash), quarantine=conflicts)
    assert counts == {
        "alerts": len(first_hash),
        "rejections": len(invalid),
        "quarantine": conflicts,
    }
    assert conflicts > 0
