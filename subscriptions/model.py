"""Who receives alerts: stakeholders with their jurisdiction and clearance, their contacts, and
their subscriptions (a rule plus channels in order of preference)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from enum import StrEnum

from channels.base import ChannelName
from core.alert import NamedValue, Tlp
from subscriptions.rules import Rule

Ring = tuple[tuple[float, float], ...]
"""A closed polygon ring of (latitude, longitude) points, first equal to last."""


class Sector(StrEnum):
    LAW_ENFORCEMENT = "law_enforcement"
    FIRE_EMS = "fire_ems"
    EMERGENCY_MANAGEMENT = "emergency_management"
    PUBLIC_HEALTH = "public_health"
    CRITICAL_INFRASTRUCTURE = "critical_infrastructure"
    GOVERNMENT = "government"


class StakeholderKind(StrEnum):
    """A named individual, or a group (a desk, a shared mailbox, a partner system).
    TLP:RED goes only to named individuals."""

    INDIVIDUAL = "individual"
    GROUP = "group"


Channel = ChannelName
"""The channels a contact is on and a subscription lists: the one list of
`channels.base.ChannelName`."""


@dataclass(frozen=True, slots=True)
class Clearance:
    """What a stakeholder may receive: the highest TLP, the caveats it is entitled to
    (e.g. LES, PII), and whether it is a law-enforcement recipient."""

    max_tlp: Tlp
    caveats: frozenset[str] = frozenset()
    law_enforcement: bool = False


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """Where a stakeholder is responsible: geocodes (FIPS6, SAME, UGC) and/or polygons."""

    geocodes: tuple[NamedValue, ...] = ()
    polygons: tuple[Ring, ...] = ()


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily local-time window (may wrap midnight) when low-severity alerts wait."""

    start: time
    end: time


@dataclass(frozen=True, slots=True)
class Stakeholder:
    id: str
    name: str
    organization: str
    sector: Sector
    kind: StakeholderKind
    jurisdiction: Jurisdiction
    clearance: Clearance
    timezone: str = "UTC"
    quiet_hours: QuietHours | None = None
    active: bool = True


@dataclass(frozen=True, slots=True)
class Contact:
    """One address of a stakeholder on one channel: an email address, an E.164 phone number,
    or a webhook URL."""

    id: str
    stakeholder_id: str
    channel: Channel
    address: str
    label: str = ""
    active: bool = True


@dataclass(frozen=True, slots=True)
class Subscription:
    """A stakeholder's standing request: alerts that satisfy `rule`, delivered on the first of
    `channels` that has an address (the rest are fallbacks)."""

    id: str
    stakeholder_id: str
    rule: Rule
    channels: tuple[Channel, ...]
    ack_required: bool = False
    escalation_id: str | None = None
    enabled: bool = True
    include_exercises: bool = False


class MemberKind(StrEnum):
    """What a distribution list's member is: a stakeholder, or another list."""

    STAKEHOLDER = "stakeholder"
    LIST = "list"


@dataclass(frozen=True, slots=True)
class DistributionList:
    """A named set of stakeholders and other lists; its audience is every stakeholder
    reachable through the nesting (see `subscriptions.lists`)."""

    id: str
    name: str
    stakeholder_ids: frozenset[str] = frozenset()
    list_ids: frozenset[str] = frozenset()
