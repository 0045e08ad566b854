"""The audience of an ad-hoc send: the people an analyst names (distribution lists,
stakeholders, and rules that pick stakeholders out), the channels to reach them on, and who
they resolve to. Pure: no I/O.

An ad-hoc alert reaches its audience only, never the standing subscriptions of anyone else.
Each member is reached as if by one subscription of its own (the send's id standing for the
subscription), so the channel choice, contacts, clearance and caveat checks are the matcher's
own (`subscriptions.matcher.resolve`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from channels.base import ChannelName
from core.alert import Alert
from subscriptions.model import Channel, Stakeholder, Subscription
from subscriptions.rules import AlertFacts, GeoArea, Rule, facts_match

DEFAULT_CHANNELS: tuple[Channel, ...] = tuple(ChannelName)
"""Every channel, email first: each member is reached on the first it has a contact on."""


@dataclass(frozen=True, slots=True)
class Audience:
    """Who one send names. `send_id` stands for the subscription in the delivery rows and the
    record; `channels` is the order of preference (the later ones are fallbacks)."""

    send_id: str
    list_ids: tuple[str, ...] = ()
    stakeholder_ids: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    channels: tuple[Channel, ...] = DEFAULT_CHANNELS
    ack_required: bool = False

    @classmethod
    def from_json(cls, send_id: str, document: Mapping[str, Any]) -> Audience:
        """The audience as the send request and the store write it (`to_json`); a rule that
        does not parse raises RejectedInput with its path."""
        return cls(
            send_id,
            tuple(document.get("lists", ())),
            tuple(document.get("stakeholders", ())),
            tuple(Rule.from_json(rule) for rule in document.get("rules", ())),
            tuple(Channel(c) for c in document.get("channels", DEFAULT_CHANNELS)),
            bool(document.get("ackRequired", False)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "lists": list(self.list_ids),
            "stakeholders": list(self.stakeholder_ids),
            "rules": [rule.to_json() for rule in self.rules],
            "channels": [c.value for c in self.channels],
            "ackRequired": self.ack_required,
        }

    def subscription_for(self, stakeholder_id: str) -> Subscription:
        """The stand-in subscription through which a member is reached: everything the
        send carries (the audience is named, so Exercise and Test traffic too)."""
        return Subscription(
            id=self.send_id,
            stakeholder_id=stakeholder_id,
            rule=Rule(),
            channels=self.channels,
            ack_required=self.ack_required,
            include_exercises=True,
        )


def members(
    audience: Audience,
    alert: Alert,
    stakeholders: Mapping[str, Stakeholder],
    resolved_lists: Mapping[str, frozenset[str]],
    areas: Mapping[str, GeoArea],
    memberships: Mapping[str, frozenset[str]],
) -> frozenset[str]:
    """The stakeholder ids the audience names: those named, those its lists resolve to, and
    every active stakeholder one of its rules matches for this alert (a rule's `area:
    "jurisdiction"` is the stakeholder's, its `lists` the stakeholder's memberships)."""
    found = set(audience.stakeholder_ids)
    for list_id in audience.list_ids:
        found |= resolved_lists.get(list_id, frozenset())
    if audience.rules:
        facts = AlertFacts.of(alert)
        for holder in stakeholders.values():
            if holder.active and holder.id not in found:
                area = areas.get(holder.id)
                member_of = memberships.get(holder.id, frozenset())
                if any(facts_match(rule, facts, area, member_of) for rule in audience.rules):
                    found.add(holder.id)
    return frozenset(found)


def unknown_names(
    audience: Audience, stakeholder_ids: Iterable[str], list_ids: Iterable[str]
) -> list[tuple[str, str]]:
    """(JSON path, id) of every list or stakeholder the audience names that does not exist."""
    known_holders, known_lists = set(stakeholder_ids), set(list_ids)
    unknown = [
        (f"$.audience.lists[{i}]", list_id)
        for i, list_id in enumerate(audience.list_ids)
        if list_id not in known_lists
    ]
    unknown += [
        (f"$.audience.stakeholders[{i}]", holder_id)
        for i, holder_id in enumerate(audience.stakeholder_ids)
        if holder_id not in known_holders
    ]
    return unknown
