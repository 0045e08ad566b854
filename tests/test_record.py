"""The dissemination record: every release (with the hash of the exact content the recipient
got) and every withholding is chained; `dissemination audit verify` finds the chain intact,
and finds an altered, a deleted and a truncated entry; export by alert and time range, as CSV
and JSON, through the CLI and the admin API. The service's scheduled anchoring verifies what
was appended since its last anchor and appends the new head to the anchor file."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import select, text

from core.errors import ConfigError
from dissemination.api import progress
from dissemination.api.tokens import Role, TokenStore
from dissemination.controls import record
from dissemination.controls.jobs import RecordAnchoring, anchor_path
from dissemination.controls.recordkey import record_key
from dissemination.metrics import Metrics
from dissemination.service import Service
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from dissemination.store.tables import audit_log
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_settings_fixture,
    publish_alert,
    settled,
    sinks_fixture,
)
from tests.fakeclock import FakeClock
from tests.logcapture import capturing
from tests.people import enrol
from tests.serviceproc import run_cli

pytestmark = pytest.mark.slow
SQLITE_TRIGGER = """CREATE TRIGGER dissemination_records_no_{op} BEFORE {op}
ON dissemination_records BEGIN SELECT RAISE(ABORT, 'dissemination_records is append-only'); END"""
TRIGGERS = {  # (drop, re-create)
    "sqlite": [
        (f"DROP TRIGGER dissemination_records_no_{op}", SQLITE_TRIGGER.format(op=op))
        for op in ("UPDATE", "DELETE")
    ],
    "postgresql": [
        (
            "DROP TRIGGER dissemination_records_append_only ON dissemination_records",
            "CREATE TRIGGER dissemination_records_append_only BEFORE UPDATE OR DELETE ON "
            "dissemination_records FOR EACH ROW EXECUTE FUNCTION "
            "dissemination_records_append_only()",
        )
    ],
}


async def tamper(
    database: Database, store_kind: str, statement: str, values: dict[str, Any] | None = None
) -> None:
    """What an intruder with the database owner's rights could do: drop the append-only
    triggers, change the entries, and put the triggers back (one transaction, so the shared
    test database keeps them)."""
    async with database.transaction() as conn:
        for drop, _ in TRIGGERS[store_kind]:
            await conn.execute(text(drop))
        await conn.execute(text(statement), values or {})
        for _, create in TRIGGERS[store_kind]:
            await conn.execute(text(create))


async def test_releases_and_withholdings_are_chained_with_the_content_hash(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    sinks: Sinks,
    store_kind: str,
    service_env: dict[str, str],
) -> None:
    assert service.database is not None
    await enrol(service, "Cleared", {"webhook": sinks.hooks.base + "ok"}, max_tlp="AMBER")
    await enrol(service, "Not cleared", {"email": "nc@example.org"}, max_tlp="GREEN")
    alert_id = await publish_alert(channel, settings, "RECORD-1", handling={"tlp": "AMBER"})
    await settled(service, alert_id, 2)
    entries = await record.export(service.database, alert_id=alert_id)
    by_outcome = {entry["outcome"]: entry for entry in entries}
    assert set(by_outcome) == {"released", "withheld"}
    released = by_outcome["released"]
    (_, body) = sinks.hooks.requests[-1]
    assert released["content_sha256"] == hashlib.sha256(body).hexdigest()
    assert released["organization"] == "Partner"
    assert "need to know: clearance TLP:AMBER admits TLP:AMBER" in released["justification"]
    assert released["rule"]
    withheld = by_outcome["withheld"]
    assert withheld["justification"].startswith("tlp_above_clearance")
    assert withheld["content_sha256"] is None
    assert (await record.verify(service.database, key=service.record_key)).intact

    code, out, _ = await run_cli(service_env, "audit", "verify")
    assert (code, out.strip()) == (0, "dissemination record intact: 2 entries verified")
    code, out, _ = await run_cli(service_env, "audit", "export", "--alert", alert_id)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["seq"] for r in rows] == ["1", "2"]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    code, out, _ = await run_cli(
        service_env, "audit", "export", "--since", later, "--format", "json"
    )
    assert (code, json.loads(out)) == (0, [])

    _, secret = await TokenStore(service.database).create("rec", Role.ADMIN, datetime.now(UTC))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as session:
        url = f"{sinks.public_url}/api/v1/dissemination-records"
        async with session.get(url, params={"alertId": alert_id}) as response:
            assert response.status == 200
            assert [e["seq"] for e in (await response.json())["items"]] == [1, 2]
        async with session.get(url, params={"format": "csv"}) as response:
            assert response.content_type == "text/csv"
        async with session.get(url, params={"since": "yesterday"}) as response:
            assert response.status == 400

    await tamper(
        service.database,
        store_kind,
        "UPDATE dissemination_records SET address = 'elsewhere@example.org' WHERE seq = 1",
    )
    found = await record.verify(service.database, key=service.record_key)
    assert (found.checked, found.problem) == (0, "entry 1 was altered")
    code, out, _ = await run_cli(service_env, "audit", "verify")
    assert code == 1
    assert "entry 1 was altered" in out


async def test_a_range_past_what_one_request_reads_is_refused_with_what_to_do(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    sinks: Sinks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert service.database is not None
    for n in range(3):
        await enrol(service, f"member-{n}", {"webhook": f"{sinks.hooks.base}m{n}"})
    alert_id = await publish_alert(channel, settings, "RECORD-RANGE")
    await settled(service, alert_id, 3)
    monkeypatch.setattr(progress, "MAX_RECORD_ENTRIES", 2)
    _, secret = await TokenStore(service.database).create("range", Role.ADMIN, datetime.now(UTC))
    url = f"{sinks.public_url}/api/v1/dissemination-records"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as session:
        for params in ({}, {"format": "csv"}, {"alertId": alert_id}):
            async with session.get(url, params=params) as response:
                assert response.status == 422, params
                error = (await response.json())["error"]
                assert error["code"] == "range_too_large"
                assert error["message"] == (
                    "the range holds 3 entries, more than the 2 one request reads: narrow since"
                    " and until, or ask for one alertId"
                )
        monkeypatch.setattr(progress, "MAX_RECORD_ENTRIES", 3)
        async with session.get(url, params={"format": "csv"}) as response:
            assert response.status == 200
            assert len((await response.text()).splitlines()) == 4  # the header and 3 entries


async def test_a_deleted_entry_is_detected(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    sinks: Sinks,
    store_kind: str,
) -> None:
    assert service.database is not None
    for n in range(3):
        await enrol(service, f"member-{n}", {"webhook": f"{sinks.hooks.base}m{n}"})
    alert_id = await publish_alert(channel, settings, "RECORD-2")
    await settled(service, alert_id, 3)
    assert (await record.verify(service.database, key=service.record_key)).checked == 3
    with pytest.raises(Exception, match="append-only"):
        async with service.database.transaction() as conn:
            await conn.execute(text("DELETE FROM dissemination_records WHERE seq = 2"))
    await tamper(service.database, store_kind, "DELETE FROM dissemination_records WHERE seq = 2")
    found = await record.verify(service.database, key=service.record_key)
    assert (found.checked, found.problem) == (1, "entry 2 is missing (found 3 next)")
    await tamper(service.database, store_kind, "DELETE FROM dissemination_records WHERE seq = 3")
    found = await record.verify(service.database, key=service.record_key)
    assert found.problem == "the chain ends at entry 1 but its head says 3"


async def test_an_anchor_catches_a_cut_tail_with_a_rewritten_head(
    service: Service,
    channel: AbstractChannel,
    settings: Settings,
    sinks: Sinks,
    store_kind: str,
    service_env: dict[str, str],
) -> None:
    assert service.database is not None
    for n in range(2):
        await enrol(service, f"member-{n}", {"webhook": f"{sinks.hooks.base}a{n}"})
    alert_id = await publish_alert(channel, settings, "RECORD-3")
    await settled(service, alert_id, 2)
    code, out, _ = await run_cli(service_env, "audit", "head")
    anchor = out.strip()
    assert code == 0
    assert anchor == "{}:{}".format(*await record.head(service.database))
    first = (await record.export(service.database))[0]
    await tamper(service.database, store_kind, "DELETE FROM dissemination_records WHERE seq = 2")
    async with service.database.transaction() as conn:  # the head rewritten to match
        await conn.execute(
            text("UPDATE dissemination_chain SET seq = 1, last_hash = :h"), {"h": first["hash"]}
        )
    assert (
        await record.verify(service.database, key=service.record_key)
    ).intact  # undetectable from inside alone
    code, out, _ = await run_cli(service_env, "audit", "verify", "--anchor", anchor)
    assert code == 1
    assert "the chain ends at entry 1, before the anchored entry 2" in out
    code, _, err = await run_cli(service_env, "audit", "verify", "--anchor", "two:abc")
    assert code == 2
    assert "expected SEQ:HASH" in err


def _entry(n: int) -> record.Entry:
    return record.Entry(
        alert_id=f"a-{n}",
        delivery_id=None,
        stakeholder_id="s-1",
        organization=None,
        channel="email",
        address=f"member-{n}@example.org",
        outcome=record.RELEASED,
        rule=("sub-1", "sub-1", "sub-2"),
        justification="matched by subscription",
        content_sha256=None,
    )


async def test_an_entry_fabricated_without_the_key_is_detected_with_no_anchor(
    service: Service, store_kind: str
) -> None:
    """Someone with the database owner's rights but not the key appends an entry (hashed as
    the chain would be, but without the key) and moves the head to it: `verify` finds it."""
    key = service.record_key
    assert key is not None
    async with service.database.transaction() as conn:
        await record.append_records(conn, [_entry(1), _entry(2)], datetime.now(UTC), key)
    assert (await record.verify(service.database, key=key)).checked == 2
    [first, second] = await record.export(service.database)
    assert first["rule"] == ["sub-1", "sub-2"]  # each matching rule once
    forged = dict(second) | {"seq": 3, "address": "attacker@example.org"}
    forged["prev_hash"] = second["hash"]
    digest = record.entry_hash(second["hash"], forged)  # as the chain hashes, less the key
    for key_id, expected in (
        (key.id, "entry 3 was altered"),
        (None, "entry 3 is not keyed (only the first 0 may be)"),  # passed off as unkeyed
    ):
        await _append_forged(service, store_kind, forged | {"hash": digest, "key_id": key_id})
        found = await record.verify(service.database, key=key)
        assert (found.checked, found.problem) == (2, expected)
        await tamper(service.database, store_kind, "DELETE FROM dissemination_records WHERE seq=3")
    other = dataclasses.replace(key, secret=b"another key of at least thirty-two bytes")
    found = await record.verify(service.database, key=other)
    assert found.problem == f"entry 1 was keyed with another key ({key.id})"
    assert (await record.verify(service.database)).problem == (
        "entry 1 is keyed: verifying needs the record key"
    )


async def _append_forged(service: Service, store_kind: str, values: dict[str, Any]) -> None:
    """The forged entry inserted past the append-only triggers, and the head moved to it."""
    values = values | {"rule": json.dumps(values["rule"])}
    rule = "CAST(:rule AS JSON)" if store_kind == "postgresql" else ":rule"
    placeholders = ", ".join(rule if name == "rule" else f":{name}" for name in values)
    statement = f"INSERT INTO dissemination_records ({', '.join(values)}) VALUES ({placeholders})"
    await tamper(service.database, store_kind, statement, values)
    async with service.database.transaction() as conn:
        await conn.execute(
            text("UPDATE dissemination_chain SET seq = :s, last_hash = :h"),
            {"s": values["seq"], "h": values["hash"]},
        )


async def test_entries_from_before_the_record_was_keyed_are_accepted_only_as_its_start(
    service: Service,
) -> None:
    key = service.record_key
    async with service.database.transaction() as conn:
        await record.append_records(conn, [_entry(1), _entry(2)], datetime.now(UTC), None)
        await record.append_records(conn, [_entry(3)], datetime.now(UTC), key)
    assert (await record.verify(service.database, key=key, unkeyed_entries=2)).intact
    found = await record.verify(service.database, key=key, unkeyed_entries=1)
    assert found.problem == "entry 2 is not keyed (only the first 1 may be)"
    async with service.database.transaction() as conn:  # unkeyed after keyed: never
        await record.append_records(conn, [_entry(4)], datetime.now(UTC), None)
    found = await record.verify(service.database, key=key, unkeyed_entries=2)
    assert found.problem == "entry 4 is not keyed (only the first 2 may be)"
    # whatever the setting admits: entry 4 was written without the key
    found = await record.verify(service.database, key=key, unkeyed_entries=5)
    assert found.problem == "entry 4 is not keyed, after keyed entries"
    after = await record.verify_after(service.database, (3, found.last[1]), key, 5)
    assert after.problem == "entry 4 is not keyed, after keyed entries"


def test_the_record_key_comes_from_the_settings_or_the_embedded_stores_key_file(
    tmp_path: Path,
) -> None:
    embedded = load_settings({"DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path)})
    key = record_key(embedded)
    assert (tmp_path / "record.key").stat().st_mode & 0o777 == 0o600
    assert record_key(embedded) == key  # made once, kept
    configured = load_settings({"DISSEMINATION_RECORD_KEY": "x" * 32})
    assert record_key(configured).secret == b"x" * 32
    with pytest.raises(ConfigError, match="at least 32 characters"):
        record_key(load_settings({"DISSEMINATION_RECORD_KEY": "short"}))
    shared = load_settings({"DISSEMINATION_STORE_URL": "postgresql+asyncpg://db.example/x"})
    with pytest.raises(ConfigError, match="DISSEMINATION_RECORD_KEY"):
        record_key(shared)
    assert [p.name for p in tmp_path.iterdir()] == ["record.key"]  # no draft left behind
    assert len(key.secret) == 64


@pytest.mark.parametrize("held", [b"", b"\n", b"0123456789"])
def test_a_key_file_too_short_to_be_a_key_is_refused(tmp_path: Path, held: bytes) -> None:
    # e.g. emptied by hand, or cut short: anyone could compute MACs with such a key
    (tmp_path / "record.key").write_bytes(held)
    embedded = load_settings({"DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="fewer than 32: restore the key it held"):
        record_key(embedded)


async def test_scheduled_anchoring_verifies_what_is_new_and_appends_the_head(
    service_env: dict[str, str], store_kind: str
) -> None:
    settings = load_settings(service_env)
    key = record_key(settings)
    database = Database.from_settings(settings.store, settings.data_path)
    clock = FakeClock(datetime.now(UTC))
    metrics = Metrics()
    job = RecordAnchoring(database, settings, key, clock, metrics)
    path = anchor_path(settings)
    assert path == settings.data_path / "record-anchors.log"

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    async def append(*numbers: int) -> None:
        async with database.transaction() as conn:
            await record.append_records(conn, [_entry(n) for n in numbers], clock.now, key)

    try:
        status = await job.run()  # an empty record: verified, nothing to anchor
        assert status is not None
        assert (status.ok, status.last_verified_seq) == (True, 0)
        assert not path.exists()
        await append(1, 2)
        clock.advance(3600)
        status = await job.run()
        assert status is not None
        assert (status.ok, status.last_verified_seq, status.last_verified_at) == (
            True,
            2,
            clock.now,
        )
        assert job.status is status
        assert sample("dissemination_record_verified_seq") == 2
        assert sample("dissemination_record_last_verified_timestamp_seconds") == (
            clock.now.timestamp()
        )
        [line] = path.read_text().splitlines()
        anchor = line.split(" ")[0]
        assert anchor == "{}:{}".format(*await record.head(database))
        assert datetime.fromisoformat(line.split(" ")[1]) == clock.now.replace(microsecond=0)
        assert path.stat().st_mode & 0o777 == 0o600
        assert await job.run() is None  # not due again within the interval
        clock.advance(3600)
        assert (await job.run()) is not None
        assert len(path.read_text().splitlines()) == 1  # the head has not moved: no new line

        await append(3)
        found = await record.verify_after(database, (2, anchor.split(":")[1]), key)
        assert (found.intact, found.checked) == (True, 1)  # only what came after the anchor
        clock.advance(3600)
        assert (await job.run()) is not None
        lines = path.read_text().splitlines()
        assert len(lines) == 2
        code, out, _ = await run_cli(
            service_env, "audit", "verify", "--anchor", lines[-1].split(" ")[0]
        )
        assert (code, out.strip()) == (0, "dissemination record intact: 3 entries verified")
        async with database.reading() as conn:
            anchored = list(
                await conn.scalars(
                    select(audit_log.c.after).where(audit_log.c.action == "record_anchor")
                )
            )
        assert [entry["seq"] for entry in anchored] == [2, 3]

        await append(4)
        await tamper(
            database,
            store_kind,
            "UPDATE dissemination_records SET address = 'elsewhere@example.org' WHERE seq = 4",
        )
        clock.advance(3600)
        with capturing() as logs:
            status = await job.run()
        assert status is not None
        assert (status.ok, status.failed_seq, status.problem) == (False, 4, "entry 4 was altered")
        assert sample("dissemination_record_verification_failures_total") == 1
        assert sample("dissemination_record_verified_seq") == 3  # the last good verification
        assert (status.last_verified_seq, status.last_verified_at) == (
            3,
            clock.now - timedelta(hours=1),
        )
        assert logs.named(
            "record_verification_failed", level="error", failed_seq=4, problem="entry 4 was altered"
        )
        assert len(path.read_text().splitlines()) == 2  # nothing anchored after a break
        async with database.reading() as conn:
            failures = list(
                await conn.scalars(
                    select(audit_log.c.reason).where(audit_log.c.action == "record_verify_failed")
                )
            )
        assert failures == ["entry 4 was altered"]
    finally:
        await database.close()


async def test_anchoring_reports_a_cut_tail_and_a_damaged_anchor_file(
    service_env: dict[str, str], store_kind: str
) -> None:
    settings = load_settings(service_env | {"DISSEMINATION_RECORD_ANCHOR_INTERVAL_MINUTES": "0"})
    key = record_key(settings)
    database = Database.from_settings(settings.store, settings.data_path)
    job = RecordAnchoring(database, settings, key, FakeClock(datetime.now(UTC)))
    try:
        async with database.transaction() as conn:
            await record.append_records(conn, [_entry(1), _entry(2)], datetime.now(UTC), key)
        status = await job.run()  # an interval of 0 here: due at every call
        assert status is not None
        assert (status.ok, status.last_verified_seq) == (True, 2)
        [first, _] = await record.export(database)
        await tamper(database, store_kind, "DELETE FROM dissemination_records WHERE seq = 2")
        async with database.transaction() as conn:  # the head rewritten to match
            await conn.execute(
                text("UPDATE dissemination_chain SET seq = 1, last_hash = :h"), {"h": first["hash"]}
            )
        status = await job.run()
        assert status is not None
        assert (status.ok, status.failed_seq) == (False, 2)
        assert status.problem == "the anchored entry 2 is missing"
        path = anchor_path(settings)
        with path.open("a") as file:
            file.write("not an anchor\n")
        status = await job.run()
        assert status is not None
        assert status.ok is False
        assert status.problem is not None
        assert "is not an anchor" in status.problem
    finally:
        await database.close()


async def test_entries_appended_while_the_chain_is_walked_are_no_break(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live service appends while `verify` walks: the walk stops at the head it read first,
    so the new entries wait for the next verification instead of reading as a broken head."""
    key = service.record_key
    assert key is not None
    async with service.database.transaction() as conn:
        await record.append_records(conn, [_entry(1), _entry(2)], datetime.now(UTC), key)
    walk = record._entries

    walked: list[int] = []
    test_task = asyncio.current_task()

    async def walk_then_append(*args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        async for row in walk(*args, **kwargs):
            yield row
        # only this test's walk: the service's own anchoring job walks the chain too
        if asyncio.current_task() is test_task:
            walked.append(1)
            async with service.database.transaction() as conn:  # after the walk, before the end
                await record.append_records(conn, [_entry(3), _entry(4)], datetime.now(UTC), key)

    monkeypatch.setattr(record, "_entries", walk_then_append)
    found = await record.verify(service.database, key=key)
    assert (walked, found.intact, found.checked) == ([1], True, 2), found.problem
    monkeypatch.setattr(record, "_entries", walk)
    found = await record.verify(service.database, key=key)
    assert (found.intact, found.checked) == (True, 4), found.problem
