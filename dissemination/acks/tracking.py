"""Acknowledgment tracking in the ledger.

When an alert's delivery rows are written, every stakeholder who must acknowledge it gets one
`acks` row: a random token id (signed into links and webhook bodies by `AckSigner`), a short
code for SMS replies, and an expiry (the alert's, or the default lifetime). Acknowledging by
any channel fills the same row once; a repeat changes nothing and says when it was first done.

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
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from channels.base import ChannelName
from dissemination.acks.escalation import EscalationState, end_escalations
from dissemination.acks.tokens import new_token_id
from dissemination.metrics import Metrics
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.idsets import one_of
from dissemination.store.rows import OWING_STATES, DeliveryState, suppress_escalation_sends
from dissemination.store.tables import acks, alerts, contacts, deliveries, stakeholders

CODE_DIGITS = 4
DEFAULT_LIFETIME = timedelta(days=7)
_LOOKUP_CHUNK = 500
_RANDOM_TRIES = 64
SMS = ChannelName.SMS.value
ACKED_DELIVERY_STATES = (DeliveryState.SENT.value, DeliveryState.DELIVERED.value)
AMBIGUOUS_CODE_REPLY = (
    "Code {code} matches more than one alert sent to this number, so nothing was "
    "acknowledged. Please acknowledge with the link in the alert's message."
)
"""The answer to an SMS reply whose code matches more than one alert texted to the number."""


class AckChannel(StrEnum):
    """How an acknowledgment arrived."""

    LINK = "link"
    SMS = "sms"
    WEBHOOK = "webhook"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """The acknowledgment as recorded; `new` is False when it had been recorded before."""

    alert_id: str
    stakeholder_id: str
    acknowledged_at: datetime
    channel: str
    comment: str | None
    new: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "alertId": self.alert_id,
            "stakeholderId": self.stakeholder_id,
            "acknowledgedAt": self.acknowledged_at.isoformat(),
            "channel": self.channel,
            "comment": self.comment,
            "alreadyAcknowledged": not self.new,
        }


@dataclass(frozen=True, slots=True)
class SmsReplyMatch:
    """What an SMS reply from a number refers to. `row`: the `acks` row (with its alert's
    headline) to acknowledge, or None. `elsewhere`: the code is live but was never texted to
    this number. `ambiguous`: the code matches more than one alert texted to this number, so
    nothing may be acknowledged by it."""

    row: dict[str, Any] | None
    elsewhere: bool = False
    ambiguous: bool = False


def _new_code(taken: set[str]) -> str:
    """A random code not in `taken` (longer once half the 4-digit codes are taken); should
    chance keep hitting taken ones, the first free one."""
    digits = CODE_DIGITS if len(taken) < 10**CODE_DIGITS // 2 else CODE_DIGITS + 2
    for _ in range(_RANDOM_TRIES):
        code = f"{secrets.randbelow(10**digits):0{digits}d}"
        if code not in taken:
            return code
    return next(c for n in range(10**digits) if (c := f"{n:0{digits}d}") not in taken)


class AckIssuer:
    """Creates the `acks` rows of a newly planned alert, inside the ledger's transaction."""

    def __init__(self, default_lifetime: timedelta = DEFAULT_LIFETIME) -> None:
        self.default_lifetime = default_lifetime

    async def issue(
        self,
        conn: AsyncConnection,
        database: Database,
        alert_id: str,
        expires: datetime | None,
        rows: Iterable[Mapping[str, Any]],
        now: datetime,
    ) -> None:
        planned = list(rows)
        owing = sorted(
            {
                row["stakeholder_id"]
                for row in planned
                if row["ack_required"] and row["state"] in OWING_STATES
            }
        )
        if not owing:
            return
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
            code = issued[stakeholder] = _new_code(taken)
            codes[stakeholder].add(code)
            for number in numbers[stakeholder]:
                at_number[number].add(code)
        expires_at = expires or now + self.default_lifetime
        await conn.execute(
            database.insert_ignoring_conflicts(acks),
            [
                {
                    "alert_id": alert_id,
                    "stakeholder_id": stakeholder,
                    "token_id": new_token_id(),
                    "code": issued[stakeholder],
                    "expires_at": expires_at,
                    "created_at": now,
                }
                for stakeholder in owing
            ],
        )


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


class AckStore:
    """Finds what a token or an SMS reply acknowledges, and records acknowledgments."""

    def __init__(self, database: Database, metrics: Metrics | None = None) -> None:
        self.database = database
        self.metrics = metrics or Metrics()

    async def by_token(self, token_id: str) -> dict[str, Any] | None:
        """The `acks` row a token names, with its alert's headline, marks and document."""
        query = (
            select(acks, alerts.c.document, alerts.c.tlp, alerts.c.caveats)
            .join(alerts, alerts.c.id == acks.c.alert_id)
            .where(acks.c.token_id == token_id)
        )
        async with self.database.reading() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row else None

    async def pair(self, alert_id: str, stakeholder_id: str) -> dict[str, Any] | None:
        async with self.database.reading() as conn:
            row = (
                (
                    await conn.execute(
                        select(acks).where(
                            acks.c.alert_id == alert_id, acks.c.stakeholder_id == stakeholder_id
                        )
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    @staticmethod
    async def for_sms_reply(
        conn: AsyncConnection, number: str, code: str | None, now: datetime
    ) -> tuple[dict[str, Any] | None, bool]:
        """`match_sms_reply` as (row, elsewhere): a code matching more than one alert texted
        to the number gives no row."""
        match = await AckStore.match_sms_reply(conn, number, code, now)
        return match.row, match.elsewhere

    @staticmethod
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

    async def acknowledge(
        self,
        alert_id: str,
        stakeholder_id: str,
        channel: AckChannel,
        now: datetime,
        *,
        comment: str | None = None,
        on_behalf: tuple[Actor, str] | None = None,
    ) -> AckOutcome | None:
        """Record the acknowledgment once; None if no acknowledgment is owed for this pair.
        `on_behalf` (the administrator and the reason) is audited with the change."""
        async with self.database.transaction() as conn:
            return await self.acknowledge_in(
                conn,
                alert_id,
                stakeholder_id,
                channel,
                now,
                comment=comment,
                on_behalf=on_behalf,
            )

    async def acknowledge_in(
        self,
        conn: AsyncConnection,
        alert_id: str,
        stakeholder_id: str,
        channel: AckChannel,
        now: datetime,
        *,
        comment: str | None = None,
        on_behalf: tuple[Actor, str] | None = None,
    ) -> AckOutcome | None:
        """`acknowledge` inside the caller's transaction."""
        pair = and_(acks.c.alert_id == alert_id, acks.c.stakeholder_id == stakeholder_id)
        actor_id, actor_name = await self._acknowledger(conn, stakeholder_id, on_behalf)
        recorded = await conn.execute(
            update(acks)
            .where(pair, acks.c.acknowledged_at.is_(None))
            .values(
                acknowledged_at=now,
                channel=channel.value,
                actor_id=actor_id,
                actor_name=actor_name or "(removed stakeholder)",
                comment=comment or None,
                reason=on_behalf[1] if on_behalf else None,
            )
        )
        row = (await conn.execute(select(acks).where(pair))).mappings().first()
        if row is None:
            return None
        new = recorded.rowcount == 1
        if new:
            await self._stop_escalation(conn, alert_id, stakeholder_id, now)
            self.metrics.acknowledged(channel.value)
        if new and on_behalf is not None:
            await write_audit(
                conn,
                at=now,
                actor=on_behalf[0],
                action="acknowledge",
                entity="ack",
                entity_id=alert_id,
                before=None,
                after={"alertId": alert_id, "stakeholderId": stakeholder_id},
                reason=on_behalf[1],
            )
        return AckOutcome(
            alert_id,
            stakeholder_id,
            row["acknowledged_at"],
            row["channel"],
            row["comment"],
            new,
        )

    @staticmethod
    async def _acknowledger(
        conn: AsyncConnection, stakeholder_id: str, on_behalf: tuple[Actor, str] | None
    ) -> tuple[str | None, str | None]:
        """Who acknowledges: the administrator acting on behalf, or the stakeholder."""
        if on_behalf is not None:
            return on_behalf[0].id, on_behalf[0].name
        name = await conn.scalar(
            select(stakeholders.c.name).where(stakeholders.c.id == stakeholder_id)
        )
        return stakeholder_id, name

    @staticmethod
    async def _stop_escalation(
        conn: AsyncConnection, alert_id: str, stakeholder_id: str, now: datetime
    ) -> None:
        """An acknowledgment ends the escalation, and escalation sends not yet made: resends
        to the stakeholder and supervisors' notices about them. In this order: on PostgreSQL,
        ending the escalation waits for an engine firing its step at this moment, so that
        the notices that step writes are there to be suppressed."""
        await end_escalations(
            conn,
            EscalationState.ACKNOWLEDGED,
            now,
            alert_ids=[alert_id],
            stakeholder_id=stakeholder_id,
        )
        await suppress_escalation_sends(conn, alert_id, stakeholder_id, now)

    @staticmethod
    async def audit_foreign_code(
        conn: AsyncConnection, number: str, code: str, now: datetime
    ) -> None:
        """An SMS reply quoted a code issued for another number: nothing is acknowledged, and
        the attempt is kept in the audit log."""
        await _audit_refused_code(
            conn, number, code, now, "the code belongs to an alert sent to another number"
        )

    @staticmethod
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
