"""SMS reply codes when stakeholders share a number (a desk phone): a reply is known only by
the number it comes from, so a code is unique among the live codes of everyone who may be
texted at that number, not only among the stakeholder's own; elsewhere codes may repeat. A
reply whose code still matches two alerts texted to the number (planned at the same moment)
acknowledges neither. On the store alone, SQLite and PostgreSQL; the random code generator
is pinned, so that every code would collide but for the rule."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from core.alert import Tlp
from dissemination.acks.smscodes import match_sms_reply
from dissemination.api.twiliohooks import TwilioHooks
from dissemination.directory.store import CONTACT, STAKEHOLDER, Directory
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap
from dissemination.ledger.alerts import Ledger, Payload
from dissemination.settings import Settings, load_settings
from dissemination.store.database import Database
from dissemination.store.rows import AlertState, DeliveryState, PlannedRow
from dissemination.store.tables import acks, deliveries
from testbed.alerts import cap_json
from testbed.directory import ACTOR, stakeholder_fields

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
DESK_PHONE = "+15555550123"
OWN_PHONE = "+15555550199"
PINNED = 4821


@pytest.fixture
def pinned_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every random code drawn is 4821 (`tracking` draws them with `secrets.randbelow`)."""
    monkeypatch.setattr(secrets, "randbelow", lambda _: PINNED)


async def holder(directory: Directory, name: str, phone: str | None = None) -> str:
    """A stakeholder, with an SMS contact at `phone` if given."""
    record, _ = await directory.create(STAKEHOLDER, stakeholder_fields(name), ACTOR, NOW)
    holder_id = str(record["id"])
    if phone is not None:
        contact = {"stakeholderId": holder_id, "channel": "sms", "address": phone}
        await directory.create(CONTACT, contact | {"label": "", "active": True}, ACTOR, NOW)
    return holder_id


def owed(stakeholder_id: str, channel: str, address: str) -> PlannedRow:
    return PlannedRow(
        stakeholder_id, None, None, channel, address, DeliveryState.PENDING, ack_required=True
    )


async def texted(database: Database, identifier: str, rows: list[PlannedRow], at: datetime) -> str:
    """An alert planned with `rows`, all sent at `at`; its id."""
    ledger = Ledger(database)
    alert = alert_from_cap(cap_json(identifier), "cap-json", DEFAULTS)
    async with database.transaction() as conn:
        await ledger.store(conn, alert, Payload(b"{}", "application/json"), AlertState.PLANNED, NOW)
        await ledger.plans.write_rows(conn, alert, rows, NOW)
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.alert_id == alert.id)
            .values(state="sent", updated_at=at)
        )
    return alert.id


async def codes(database: Database) -> dict[tuple[str, str], str]:
    async with database.reading() as conn:
        found = await conn.execute(select(acks.c.alert_id, acks.c.stakeholder_id, acks.c.code))
        return {(alert_id, holder_id): code for alert_id, holder_id, code in found}


@pytest.mark.usefixtures("pinned_codes")
async def test_stakeholders_sharing_a_number_never_hold_the_same_live_code(
    store: Database,
) -> None:
    directory = Directory(store)
    desk = await holder(directory, "Night desk", DESK_PHONE)
    officer = await holder(directory, "Duty officer", DESK_PHONE)
    loner = await holder(directory, "Loner", OWN_PHONE)
    x = await texted(store, "X", [owed(desk, "sms", DESK_PHONE)], NOW)
    y = await texted(store, "Y", [owed(officer, "sms", DESK_PHONE)], NOW + timedelta(minutes=1))
    z = await texted(store, "Z", [owed(loner, "sms", OWN_PHONE)], NOW + timedelta(minutes=2))
    issued = await codes(store)
    assert issued[(x, desk)] == str(PINNED)
    assert issued[(y, officer)] != str(PINNED), "the desk phone holds 4821 for alert X already"
    assert issued[(z, loner)] == str(PINNED)  # unique per number, not everywhere

    # the desk phone replies with X's code: X it is, not the alert texted last
    later = NOW + timedelta(minutes=3)
    async with store.transaction() as conn:
        match = await match_sms_reply(conn, DESK_PHONE, str(PINNED), later)
        row, elsewhere = match.row, match.elsewhere
    assert row is not None
    assert (row["alert_id"], row["stakeholder_id"], elsewhere) == (x, desk, False)


@pytest.mark.usefixtures("pinned_codes")
async def test_one_alert_to_two_stakeholders_on_one_number_gets_two_codes(
    store: Database,
) -> None:
    directory = Directory(store)
    desk = await holder(directory, "Night desk")  # texted at a number that is no contact
    officer = await holder(directory, "Duty officer", DESK_PHONE)  # emailed, may be texted
    third = await holder(directory, "Third")
    alert = await texted(
        store,
        "SHARED-1",
        [
            owed(desk, "sms", DESK_PHONE),
            owed(officer, "email", "officer@example.org"),
            owed(third, "sms", DESK_PHONE),
        ],
        NOW,
    )
    issued = await codes(store)
    assert len({issued[(alert, h)] for h in (desk, officer, third)}) == 3


async def test_a_code_two_alerts_on_the_number_carry_acknowledges_neither(
    store: Database, tmp_path: Path
) -> None:
    directory = Directory(store)
    desk = await holder(directory, "Night desk", DESK_PHONE)
    officer = await holder(directory, "Duty officer", DESK_PHONE)
    x = await texted(store, "X", [owed(desk, "sms", DESK_PHONE)], NOW)
    y = await texted(store, "Y", [owed(officer, "sms", DESK_PHONE)], NOW + timedelta(minutes=1))
    async with store.transaction() as conn:  # as if planned at once, neither seeing the other
        await conn.execute(update(acks).values(code="4821"))
    later = NOW + timedelta(minutes=2)

    async with store.transaction() as conn:
        match = await match_sms_reply(conn, DESK_PHONE, "4821", later)
    row, elsewhere = match.row, match.elsewhere
    assert (row, elsewhere) == (None, False), "ACK 4821 resolved to one of two alerts"
    assert (match.row, match.elsewhere, match.ambiguous) == (None, False, True)

    hooks = TwilioHooks(store, _sms_settings(tmp_path), lambda: later)
    async with store.transaction() as conn:
        reply = await hooks._answer(conn, {"From": DESK_PHONE, "Body": "ACK 4821"}, later)
    assert "Acknowledged" not in reply
    assert await _acknowledged(store) == set()

    async with store.transaction() as conn:  # once the codes differ, the reply is understood
        await conn.execute(update(acks).where(acks.c.alert_id == y).values(code="1111"))
        reply = await hooks._answer(conn, {"From": DESK_PHONE, "Body": "ACK 4821"}, later)
    assert "Acknowledged" in reply
    assert await _acknowledged(store) == {(x, desk)}


def _sms_settings(tmp_path: Path) -> Settings:
    return load_settings(
        {
            "DISSEMINATION_SERVICE_DATA_DIR": str(tmp_path),
            "DISSEMINATION_SMS_ACCOUNT_SID": "AC" + "0" * 32,
            "DISSEMINATION_SMS_AUTH_TOKEN": "t" * 32,
        }
    )


async def _acknowledged(database: Database) -> set[tuple[str, str]]:
    async with database.reading() as conn:
        found = await conn.execute(
            select(acks.c.alert_id, acks.c.stakeholder_id).where(
                acks.c.acknowledged_at.is_not(None)
            )
        )
        return {(alert_id, holder_id) for alert_id, holder_id in found}
