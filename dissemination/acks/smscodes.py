"""SMS reply codes: the short code each acknowledgment owed gets for SMS replies, and which
acknowledgment a reply from a number refers to.

An SMS reply is known only by the number it comes from, and several stakeholders may share a
number (a desk phone), so a code is unique among the live (unexpired) codes of the
stakeholder and of everyone else who may be texted at the same number: the numbers of the
alert's SMS rows to the stakeholder and the stakeholder's SMS contacts, shared with whoever
has one of those numbers as a contact. Should a reply's code still match more than one alert
texted to the number (alerts planned at the same moment, in transactions that did not see
each other's codes; a number no longer anyone's contact), it acknowledges nothing: which one
was meant is never guessed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection

from channels.base import ChannelName
from dissemination.store.audit import Actor, write_audit
from dissemination.store.idsets import one_of
from dissemination.store.rows import DeliveryState
from dissemination.store.tables import acks, alerts, contacts, deliveries

CODE_DIGITS = 4
_LOOKUP_CHUNK = 500
_RANDOM_TRIES = 64
SMS = ChannelName.SMS.value
ACKED_DELIVERY_STATES = (DeliveryState.SENT.value, DeliveryState.DELIVERED.value)
AMBIGUOUS_CODE_REPLY = (
    "Code {code} matches more than one alert sent to this number, so nothing was "
    "acknowledged. Please acknowledge with the link in the alert's message."
)
"""The answer to an SMS reply whose code matches more than one alert texted to the number."""


@dataclass(frozen=True, slots=True)
class SmsReplyMatch:
    """What an SMS reply from a number refers to. `row`: the `acks` row (with its alert's
    headline) to acknowledge, or None. `elsewhere`: the code is live but was never texted to
    this number. `ambiguous`: the code matches more than one alert texted to this number, so
    nothing may be acknowledged by it."""

    row: dict[str, Any] | None
    elsewhere: bool = False
    ambiguous: bool = False


def new_code(taken: set[str]) -> str:
    """A random code not in `taken` (longer once half the 4-digit codes are taken); should
    chance keep hitting taken ones, the first free one."""
    digits = CODE_DIGITS if len(taken) < 10**CODE_DIGITS // 2 else CODE_DIGITS + 2
    for _ in range(_RANDOM_TRIES):
        code = f"{secrets.randbelow(10**digits):0{digits}d}"
        if code not in taken:
            return code
    return next(c for n in range(10**digits) if (c := f"{n:0{digits}d}") not in taken)


async def codes_for(
    conn: AsyncConnection, owing: list[str], planned: list[Mapping[str, Any]], now: datetime
) -> dict[str, str]:
    """A new code for each of the `owing` stakeholders of an alert whose rows are `planned`:
    unique among the live codes of each, and of everyone who may be texted at a number they
    may be texted this alert's code at."""
    numbers = await _numbers_of(conn, owing, planned)
    holders = await _holders_of(conn, numbers)
    codes = await _live_codes(conn, {*owing, *(h for hs in holders.values() for h in hs)}, now)
    at_number = {
        number: set().union(*(codes[holder] for holder in holding))
        for number, holding in holders.items()
    }
    issued: dict[str, str] = {}
    for stakeholder in owing:
        taken = codes[stakeholder].union(*(at_number[n] for n in numbers[stakeholder]))
        code = issued[stakeholder] = new_code(taken)
        codes[stakeholder].add(code)
        for number in numbers[stakeholder]:
            at_number[number].add(code)
    return issued


async def _numbers_of(
    conn: AsyncConnection, owing: list[str], rows: Iterable[Mapping[str, Any]]
) -> dict[str, set[str]]:
    """The numbers each stakeholder may be texted this alert's code at: the alert's SMS rows
    to them, and their SMS contacts (a fallback or an escalation step may text one later)."""
    numbers: dict[str, set[str]] = {stakeholder: set() for stakeholder in owing}
    for row in rows:
        if row["channel"] == SMS and row["stakeholder_id"] in numbers:
            numbers[row["stakeholder_id"]].add(row["address"])
    found = await conn.execute(
        select(contacts.c.stakeholder_id, contacts.c.address).where(
            one_of(conn.dialect.name, contacts.c.stakeholder_id, owing), contacts.c.channel == SMS
        )
    )
    for stakeholder_id, address in found:
        numbers[stakeholder_id].add(address)
    return numbers


async def _holders_of(
    conn: AsyncConnection, numbers: Mapping[str, set[str]]
) -> dict[str, set[str]]:
    """Who may hold a live code texted to each of these numbers: the stakeholders about to be
    texted at it, and those who have it as an SMS contact."""
    holders: dict[str, set[str]] = {}
    for stakeholder, theirs in numbers.items():
        for number in theirs:
            holders.setdefault(number, set()).add(stakeholder)
    if holders:
        found = await conn.execute(
            select(contacts.c.stakeholder_id, contacts.c.address).where(
                contacts.c.channel == SMS, one_of(conn.dialect.name, contacts.c.address, holders)
            )
        )
        for stakeholder_id, address in found:
            holders[address].add(stakeholder_id)
    return holders


async def _live_codes(
    conn: AsyncConnection, stakeholders: Iterable[str], now: datetime
) -> dict[str, set[str]]:
    """The unexpired codes of each of these stakeholders (acknowledged ones too: a repeated
    reply quoting one must still find only its own alert)."""
    ordered = sorted(stakeholders)
    codes: dict[str, set[str]] = {stakeholder: set() for stakeholder in ordered}
    for start in range(0, len(ordered), _LOOKUP_CHUNK):
        live = await conn.execute(
            select(acks.c.stakeholder_id, acks.c.code).where(
                acks.c.stakeholder_id.in_(ordered[start : start + _LOOKUP_CHUNK]),
                acks.c.expires_at > now,
            )
        )
        for stakeholder_id, code in live:
            codes[stakeholder_id].add(code)
    return codes


async def match_sms_reply(
    conn: AsyncConnection, number: str, code: str | None, now: datetime
) -> SmsReplyMatch:
    """The open acknowledgment an SMS reply from `number` refers to: with a code, the one
    alert texted to this number with that code (none if more than one has it); without,
    the newest unacknowledged one texted to it."""
    if code is None:
        newest = (
            select(acks, alerts.c.headline)
            .join(alerts, alerts.c.id == acks.c.alert_id)
            .join(
                deliveries,
                and_(
                    deliveries.c.alert_id == acks.c.alert_id,
                    deliveries.c.stakeholder_id == acks.c.stakeholder_id,
                ),
            )
            .where(
                _texted_to(number),
                acks.c.expires_at > now,
                acks.c.acknowledged_at.is_(None),
            )
            .order_by(deliveries.c.updated_at.desc())
            .limit(1)
        )
        row = (await conn.execute(newest)).mappings().first()
        return SmsReplyMatch(dict(row) if row else None)
    texted = (
        exists()
        .where(
            deliveries.c.alert_id == acks.c.alert_id,
            deliveries.c.stakeholder_id == acks.c.stakeholder_id,
            _texted_to(number),
        )
        .correlate(acks)
    )
    found = (
        (
            await conn.execute(
                select(acks, alerts.c.headline)
                .join(alerts, alerts.c.id == acks.c.alert_id)
                .where(acks.c.code == code, acks.c.expires_at > now, texted)
                .limit(2)
            )
        )
        .mappings()
        .all()
    )
    if len(found) > 1:
        return SmsReplyMatch(None, ambiguous=True)
    if found:
        return SmsReplyMatch(dict(found[0]))
    elsewhere = await conn.scalar(
        select(acks.c.alert_id).where(acks.c.code == code, acks.c.expires_at > now).limit(1)
    )
    return SmsReplyMatch(None, elsewhere=elsewhere is not None)


async def audit_foreign_code(conn: AsyncConnection, number: str, code: str, now: datetime) -> None:
    """An SMS reply quoted a code issued for another number: nothing is acknowledged, and
    the attempt is kept in the audit log."""
    await _audit_refused_code(
        conn, number, code, now, "the code belongs to an alert sent to another number"
    )


async def audit_ambiguous_code(
    conn: AsyncConnection, number: str, code: str, now: datetime
) -> None:
    """An SMS reply quoted a code that more than one alert texted to the number carries:
    nothing is acknowledged (the sender is asked to use the link), and the attempt is kept
    in the audit log."""
    await _audit_refused_code(
        conn, number, code, now, "the code matches more than one alert sent to this number"
    )


async def _audit_refused_code(
    conn: AsyncConnection, number: str, code: str, now: datetime, reason: str
) -> None:
    await write_audit(
        conn,
        at=now,
        actor=Actor(None, "sms reply"),
        action="ack_refused",
        entity="ack",
        entity_id=None,
        before=None,
        after={"from": number, "code": code},
        reason=reason,
    )


def _texted_to(number: str) -> ColumnElement[bool]:
    """The delivery row is an SMS to `number` that reached the provider."""
    return and_(
        deliveries.c.channel == SMS,
        deliveries.c.address == number,
        deliveries.c.state.in_(ACKED_DELIVERY_STATES),
    )
