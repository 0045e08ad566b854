"""Claims and settlements of concurrent delivery tasks, on SQLite and PostgreSQL: they go
together in one transaction, and each caller still gets exactly its own rows (with its own
alert's document, however full the shared document cache), and every send is recorded once,
in order, on an unbroken chain."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text, update

from core.alert import Tlp
from dissemination.controls.record import verify
from dissemination.delivery.claimread import claim_parameters, claim_statement
from dissemination.delivery.claims import DOCUMENT_CACHE_SIZE, Claim, DeliveryStore, Settlement
from dissemination.directory.store import CONTACT, STAKEHOLDER, Directory
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.store.audit import Actor
from dissemination.store.database import Database
from dissemination.store.rows import (
    SETTLE_FROM_ARRAYS,
    AlertState,
    DeliveryState,
    PlannedRow,
    insert_planned,
)
from dissemination.store.tables import (
    acks,
    alerts,
    contacts,
    deliveries,
    dissemination_records,
    sms_opt_outs,
)
from testbed.alerts import cap_json
from testbed.directory import stakeholder_fields

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
ALERTS = 5
ROWS = 3
CLAIM_ACTOR = Actor(None, "test")


async def pending_rows(database: Database) -> dict[str, list[str]]:
    """ALERTS stored alerts with ROWS pending webhook rows each: row ids by alert id."""
    by_alert: dict[str, list[str]] = {}
    for n in range(ALERTS):
        alert = alert_from_cap(
            cap_json(f"CLAIMS-{n}"), "cap-json", HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
        )
        await Ledger(database).record_alert(
            alert, Payload(b"{}", "application/json"), AlertState.RECEIVED, NOW
        )
        values = [
            PlannedRow(
                f"s-{n}-{r}", None, None, "webhook", f"https://h{r}.example/", DeliveryState.PENDING
            ).values(alert.id, NOW)
            for r in range(ROWS)
        ]
        async with database.transaction() as conn:
            await insert_planned(conn, database, values)
        by_alert[alert.id] = [str(v["id"]) for v in values]
    return by_alert


async def test_concurrent_claims_each_get_their_own_rows_and_documents(store: Database) -> None:
    by_alert = await pending_rows(store)
    delivery = DeliveryStore(store)
    # a full cache: the next claim empties it while the others may still need theirs
    delivery._documents.update({f"other-{n}": {} for n in range(DOCUMENT_CACHE_SIZE)})
    wanted = [*by_alert.values(), next(iter(by_alert.values()))]  # the first alert asked twice
    claims = await asyncio.gather(*(delivery.claim(ids, NOW) for ids in wanted))
    for (alert_id, ids), claim in zip(by_alert.items(), claims, strict=False):
        assert sorted(row.id for row in claim.rows) == sorted(ids)
        assert {row.alert_id for row in claim.rows} == {alert_id}
        assert all(row.document["identifier"].startswith("CLAIMS-") for row in claim.rows)
        assert claim.held == []
        assert claim.expired == 0
    assert claims[-1].rows == []  # claimed once only, by the first asker
    async with store.reading() as conn:
        states = set(await conn.scalars(select(deliveries.c.state)))
    assert states == {DeliveryState.SENDING.value}


async def test_concurrent_settlements_are_recorded_once_in_order_on_one_chain(
    store: Database,
) -> None:
    by_alert = await pending_rows(store)
    delivery = DeliveryStore(store)
    claims = await asyncio.gather(*(delivery.claim(ids, NOW) for ids in by_alert.values()))
    results = await asyncio.gather(
        *(
            delivery.settle(
                [Settlement(row, DeliveryState.SENT, "accepted", "200") for row in claim.rows], NOW
            )
            for claim in claims
        )
    )
    assert all(result.fallbacks == {} for result in results)
    assert sum(len(result.first_deliveries) for result in results) == ALERTS
    async with store.reading() as conn:
        states = set(await conn.scalars(select(deliveries.c.state)))
        recorded = await conn.scalar(select(func.count()).select_from(dissemination_records))
    assert states == {DeliveryState.SENT.value}
    assert recorded == ALERTS * ROWS
    report = await verify(store)
    assert report.intact, report.problem
    assert report.checked == ALERTS * ROWS


async def test_a_large_plan_is_written_whole_once_and_settles_with_every_column(
    store: Database,
) -> None:
    """Past a few rows PostgreSQL gets the plan as one array per column: the same rows, the
    same values, and re-planning still adds nothing."""
    alert = alert_from_cap(
        cap_json("CLAIMS-BULK"), "cap-json", HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
    )
    await Ledger(store).record_alert(
        alert, Payload(b"{}", "application/json"), AlertState.RECEIVED, NOW
    )
    later = NOW + timedelta(minutes=5)
    planned = [
        PlannedRow(
            f"s-{n}",
            None if n % 2 else f"sub-{n}",
            None,
            "webhook",
            f"https://h{n}.example/\u00e9",
            DeliveryState.WITHHELD if n == 7 else DeliveryState.PENDING,
            reason="tlp" if n == 7 else None,
            fallback_channels=("email", "sms") if n % 3 == 0 else (),
            ack_required=n % 4 == 0,
            subscriptions=(f"sub-{n}", "sub-x"),
            not_before=later if n == 5 else None,
        ).values(alert.id, NOW)
        for n in range(40)
    ]
    async with store.transaction() as conn:
        assert await insert_planned(conn, store, planned[:30]) == 30
    async with store.transaction() as conn:
        assert await insert_planned(conn, store, planned) == 10
    async with store.reading() as conn:
        written = {
            row["id"]: dict(row) for row in (await conn.execute(select(deliveries))).mappings()
        }
    assert written.keys() == {v["id"] for v in planned}
    for value in planned:
        row = written[value["id"]]
        assert {name: row[name] for name in value} == value | {"resent": False}
        assert row["fallback_of"] is None

    delivery = DeliveryStore(store)
    ids = [v["id"] for v in planned]
    claim = await delivery.claim(ids, NOW)
    assert [held for held, _ in claim.held] == [planned[5]["id"]]
    first, *rest = claim.rows
    await delivery.settle(
        [
            Settlement(first, DeliveryState.PENDING, "HTTP 503", not_before=later),
            Settlement(first, DeliveryState.SENT, "HTTP 200", "200"),  # the first one stands
            *(
                Settlement(row, DeliveryState.FAILED, "HTTP 404", uncount_attempt=True)
                for row in rest
            ),
        ],
        NOW,
    )
    async with store.reading() as conn:
        settled = {
            row["id"]: row
            for row in (
                await conn.execute(select(deliveries).where(deliveries.c.id.in_(ids)))
            ).mappings()
        }
    assert settled[first.id]["state"] == DeliveryState.PENDING.value
    assert settled[first.id]["not_before"] == later
    assert settled[first.id]["attempts"] == 1
    assert {settled[row.id]["state"] for row in rest} == {DeliveryState.FAILED.value}
    assert {settled[row.id]["attempts"] for row in rest} == {0}
    assert {settled[row.id]["reason"] for row in rest} == {"HTTP 404"}


async def test_one_claim_sorts_each_row_into_one_part_with_what_sending_it_needs(
    store: Database,
) -> None:
    """A claim of due, waiting, expired, already-claimed and unknown rows: each due row comes
    back once with its contact's secret, its SMS opt-out, its acknowledgment token and its
    stakeholder as now (None once removed); an expired alert's rows are suppressed whether
    due or waiting; the waiting one is reported with its time; the rest are left alone.
    PostgreSQL does it in one statement, SQLite step by step: the outcome is the same."""
    later = NOW + timedelta(minutes=10)
    directory = Directory(store)
    async with store.transaction() as conn:
        holder, _ = await directory.create_in(
            conn, STAKEHOLDER, stakeholder_fields("Dana"), CLAIM_ACTOR, NOW
        )
        contact, _ = await directory.create_in(
            conn,
            CONTACT,
            {
                "stakeholderId": holder["id"],
                "channel": "webhook",
                "address": "https://dana.example/in",
                "label": "",
                "active": True,
            },
            CLAIM_ACTOR,
            NOW,
        )
    live, gone = [
        alert_from_cap(cap_json(name), "cap-json", HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR))
        for name in ("CLAIM-LIVE", "CLAIM-GONE")
    ]
    for alert in (live, gone):
        await Ledger(store).record_alert(
            alert, Payload(b"{}", "application/json"), AlertState.RECEIVED, NOW
        )

    def row(
        alert_id: str, holder_id: str, channel: str, address: str, **more: Any
    ) -> dict[str, Any]:
        planned = PlannedRow(holder_id, None, None, channel, address, DeliveryState.PENDING)
        return planned.values(alert_id, NOW) | more

    rows = {
        "signed": row(
            live.id, holder["id"], "webhook", contact["address"], contact_id=contact["id"]
        ),
        "opted out": row(live.id, "nobody", "sms", "+15550100"),
        "with token": row(live.id, holder["id"], "sms", "+15550101"),
        "waiting": row(live.id, holder["id"], "email", "dana@example.org", not_before=later),
        "sending": row(live.id, holder["id"], "email", "desk@example.org", state="sending"),
        "expired": row(gone.id, holder["id"], "webhook", "https://gone.example/"),
        "expired waiting": row(gone.id, holder["id"], "email", "g@example.org", not_before=later),
    }
    async with store.transaction() as conn:
        await insert_planned(conn, store, list(rows.values()))
        await conn.execute(update(contacts).values(secret="whsec-dana"))
        await conn.execute(insert(sms_opt_outs).values(address="+15550100", keyword="STOP", at=NOW))
        await conn.execute(
            insert(acks).values(
                alert_id=live.id,
                stakeholder_id=holder["id"],
                token_id="t" * 32,
                code="12345678",
                expires_at=later,
                created_at=NOW,
            )
        )
        await conn.execute(
            update(alerts).where(alerts.c.id == gone.id).values(expires_at=NOW - timedelta(1))
        )
    ids: dict[str, str] = {name: value["id"] for name, value in rows.items()}

    claim = await DeliveryStore(store).claim([*ids.values(), "no-such-row"], NOW)

    claimed = {r.id: r for r in claim.rows}
    assert claimed.keys() == {ids["signed"], ids["opted out"], ids["with token"]}
    signed, opted_out, with_token = (
        claimed[ids[name]] for name in ("signed", "opted out", "with token")
    )
    assert (signed.secret, signed.opted_out, signed.attempts) == ("whsec-dana", None, 1)
    assert signed.stakeholder is not None
    assert signed.stakeholder.name == "Dana"
    assert (signed.ack_token_id, signed.ack_code) == ("t" * 32, "12345678")
    assert signed.ack_expires_at == later
    assert signed.document["identifier"] == "CLAIM-LIVE"
    assert (opted_out.opted_out, opted_out.stakeholder, opted_out.ack_token_id) == (
        "STOP",
        None,
        None,
    )
    assert with_token.ack_code == "12345678"
    assert with_token.opted_out is None
    assert claim.held == [(ids["waiting"], later)]
    assert claim.expired == 2
    async with store.reading() as conn:
        states = {
            r.id: (r.state, r.reason, r.attempts)
            for r in await conn.execute(
                select(
                    deliveries.c.id, deliveries.c.state, deliveries.c.reason, deliveries.c.attempts
                )
            )
        }
    assert states == {
        ids["signed"]: ("sending", None, 1),
        ids["opted out"]: ("sending", None, 1),
        ids["with token"]: ("sending", None, 1),
        ids["waiting"]: ("pending", None, 0),
        ids["sending"]: ("sending", None, 0),
        ids["expired"]: ("suppressed", "expired", 0),
        ids["expired waiting"]: ("suppressed", "expired", 0),
    }
    assert await DeliveryStore(store).claim(list(ids.values()), NOW) == Claim(
        [], [(ids["waiting"], later)]
    )


async def test_warming_up_opens_connections_and_changes_nothing(store: Database) -> None:
    """Before the first task a worker opens pool connections and prepares the claim on each
    (PostgreSQL), by claiming no rows: every pending row stays pending."""
    by_alert = await pending_rows(store)
    await DeliveryStore(store).warm_up(4, NOW)
    if store.dialect == "postgresql":
        assert store.engine.pool.checkedin() >= 4  # type: ignore[attr-defined]
    async with store.reading() as conn:
        states = set(await conn.scalars(select(deliveries.c.state)))
    assert states == {DeliveryState.PENDING.value}
    claims = await DeliveryStore(store).claim(next(iter(by_alert.values())), NOW)
    assert len(claims.rows) == ROWS


async def recorded_alert(database: Database, identifier: str) -> Any:
    """A CAP alert recorded in the ledger, with no delivery rows yet."""
    alert = alert_from_cap(
        cap_json(identifier), "cap-json", HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
    )
    await Ledger(database).record_alert(
        alert, Payload(b"{}", "application/json"), AlertState.RECEIVED, NOW
    )
    return alert


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, its sub-plans included."""
    nodes, pending = [], [plan]
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(node.get("Plans", ()))
    return nodes


def state_indexes(nodes: list[dict[str, Any]]) -> set[str]:
    """The indexes on the deliveries' state that a plan reads."""
    return {n["Index Name"] for n in nodes if n.get("Index Name", "").startswith("ix_deliveries")}


async def explained(
    database: Database, statement: Any, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The plan nodes of `statement` as run (EXPLAIN ANALYZE), its changes rolled back."""
    async with database.engine.connect() as conn:
        compiled = statement.compile(dialect=conn.dialect)
        values = {**compiled.params, **(params or {})}
        positional = [values[name] for name in compiled.positiontup]
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        transaction = driver.transaction()
        await transaction.start()
        try:
            found = await driver.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}", *positional)
        finally:
            await transaction.rollback()
    document = json.loads(found) if isinstance(found, str) else found  # the pool decodes JSON
    return plan_nodes(document[0]["Plan"])


async def test_claims_and_settles_never_read_the_state_index_whatever_the_statistics_say(
    store: Database,
) -> None:
    """The statistics lag a fan-out: its rows are written moments before they are claimed,
    while the last ANALYZE saw almost none pending, so the planner takes the state index for
    cheap and a claim of a hundred rows visits every pending row of the fan-out through it.
    A claim or settle names its rows by id: it must never read the state index (by id, or a
    scan when the table is small, as the planner's costs decide)."""
    if store.dialect != "postgresql":
        pytest.skip("statistics and plans are PostgreSQL's")
    alert = await recorded_alert(store, "STALE-STATS")

    async def plan(count: int, state: DeliveryState, prefix: str) -> list[str]:
        values = [
            PlannedRow(f"{prefix}-{n}", None, None, "webhook", "https://h.example/", state).values(
                alert.id, NOW
            )
            for n in range(count)
        ]
        async with store.transaction() as conn:
            await insert_planned(conn, store, values)
        return [str(v["id"]) for v in values]

    await plan(50, DeliveryState.SENT, "done")
    async with store.engine.connect() as conn:  # the statistics of before the fan-out
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE deliveries"))
    ids = await plan(20_000, DeliveryState.PENDING, "fan-out")
    claimed = ids[:100]

    nodes = await explained(store, claim_statement(), claim_parameters(claimed, NOW))
    assert any(n.get("Relation Name") == "deliveries" for n in nodes)
    assert state_indexes(nodes) == set()

    async with store.transaction() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids[:5000]))
            .values(state=DeliveryState.SENDING.value)
        )
    settle = {
        "now": NOW,
        "ids": claimed,
        "states": ["sent"] * len(claimed),
        "reasons": [None] * len(claimed),
        "provider_ids": [None] * len(claimed),
        "not_befores": [None] * len(claimed),
        "uncounts": [0] * len(claimed),
        "details": [None] * len(claimed),
    }
    nodes = await explained(store, SETTLE_FROM_ARRAYS, settle)
    assert any(n.get("Relation Name") == "deliveries" for n in nodes)
    assert state_indexes(nodes) == set()


async def test_rows_in_flight_and_provider_ids_are_found_through_their_small_indexes(
    store: Database,
) -> None:
    """The state index holds only rows in flight, and the provider-id index only rows with a
    provider id (migration 0023): the lookups that need them must still be able to use them,
    which a partial index allows only when the query's condition implies the index's."""
    if store.dialect != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    alert = await recorded_alert(store, "IN-FLIGHT")
    values = [
        PlannedRow(f"r-{n}", None, None, "sms", f"+1202555{n:04d}", DeliveryState.SENT).values(
            alert.id, NOW
        )
        | {"provider_id": f"SM{n:032d}" if n % 2 else None}
        for n in range(5000)
    ]
    for value in values[:20]:
        value["state"] = DeliveryState.SENDING.value
    async with store.transaction() as conn:
        await insert_planned(conn, store, values)
    async with store.engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE deliveries"))

    def reads(nodes: list[dict[str, Any]]) -> set[str]:
        return {n["Index Name"] for n in nodes if "Index Name" in n}

    stuck = select(deliveries.c.id).where(
        deliveries.c.channel == "sms",
        deliveries.c.state == DeliveryState.SENDING.value,
        deliveries.c.updated_at < NOW + timedelta(minutes=5),
    )
    backlog = (
        select(deliveries.c.channel, func.count())
        .where(deliveries.c.state == DeliveryState.PENDING.value)
        .group_by(deliveries.c.channel)
    )
    by_provider = select(deliveries.c.id).where(
        deliveries.c.provider_id == "SM" + "1".zfill(32), deliveries.c.channel == "sms"
    )
    assert "ix_deliveries_in_flight" in reads(await explained(store, stuck))
    assert "ix_deliveries_in_flight" in reads(await explained(store, backlog))
    assert "ix_deliveries_provider_id" in reads(await explained(store, by_provider))
    async with store.reading() as conn:
        sizes: dict[str, int] = dict(
            (
                await conn.execute(
                    text(
                        "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) "
                        "FROM pg_index WHERE indrelid = 'deliveries'::regclass"
                    )
                )
            ).all()
        )
    assert sizes["ix_deliveries_in_flight"] < sizes["deliveries_pkey"] / 10


async def test_an_alert_is_first_delivered_by_the_first_settle_that_sends_one_of_its_rows(
    store: Database,
) -> None:
    by_alert = await pending_rows(store)
    alert_id, ids = next(iter(by_alert.items()))
    delivery = DeliveryStore(store)
    rows = (await delivery.claim(ids, NOW)).rows
    assert len(rows) == ROWS
    later = NOW + timedelta(seconds=7)

    async def first_delivered() -> datetime | None:
        async with store.reading() as conn:
            found = await conn.scalar(
                select(alerts.c.first_delivered_at).where(alerts.c.id == alert_id)
            )
        return None if found is None else found.astimezone(UTC)

    failed = await delivery.settle([Settlement(rows[0], DeliveryState.FAILED, "HTTP 400")], NOW)
    assert failed.first_deliveries == []
    late = await delivery.settle([Settlement(rows[0], DeliveryState.SENT, "HTTP 204")], NOW)
    assert late.first_deliveries == []  # a late writer: its row was no longer being sent
    assert await first_delivered() is None
    sent = await delivery.settle([Settlement(rows[1], DeliveryState.SENT, "HTTP 204")], later)
    assert sent.first_deliveries == [7.0]  # from the alert's receipt, NOW
    assert await first_delivered() == later
    again = await delivery.settle(
        [
            Settlement(rows[1], DeliveryState.SENT, "HTTP 204"),  # settled already: no row moves
            Settlement(rows[2], DeliveryState.SENT, "HTTP 204"),
        ],
        later + timedelta(seconds=1),
    )
    assert again.first_deliveries == []
    assert await first_delivered() == later
