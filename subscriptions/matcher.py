"""Who gets an alert: the indexed `Matcher` (built once, updated incrementally, queried by every
worker of a process) and `brute_force_match`, its reference. Pure: no I/O, no asyncio.

Both select the subscriptions whose rule matches (`subscriptions.rules.facts_match`), then
share one post-processing step (`resolve`): channel choice, contacts, the clearance check,
deduplication and ordering. Only candidate selection differs: the index can prune, never decide.

Indexing. Each rule is anchored in one inverted index, the most selective it can use, in this
order: area (canonical geocode keys, a `geo_child` entry under the state for each county or zone
key so a state-wide alert finds county rules, and polygons in an STRtree), SAME event codes,
events, keywords (the longest word of each phrase), caveats, senders, categories, TLP, kinds,
message types, statuses. A rule with none of these is always checked. A rule whose area can
never match (an empty jurisdiction) is anchored nowhere. Thresholds are ordinal checks in the
predicate. Cost per alert: one dictionary lookup per alert key/word/value, plus the predicate
on each candidate, so it grows with the matches, not the rules.

Polygons. A shapely STRtree cannot change, so polygons live in a tree over a static base plus
a short "recent" list scanned linearly (bounding boxes); removals leave tombstones. The tree
is rebuilt during an update once the recent list exceeds RECENT_LIMIT or tombstones exceed a
quarter of the base, so an update costs O(1) amortized plus a rebuild every RECENT_LIMIT
polygon changes, and `match` never mutates anything (safe to call from several threads when
no update runs concurrently). `load` builds the tree once.

Subscriptions are indexed only while enabled and their stakeholder exists and is active. A
change of a stakeholder's jurisdiction reindexes only its subscriptions with area
"jurisdiction"; a change of `active` reindexes all of its subscriptions.

Distribution lists. A rule's `lists` is a property of the stakeholder, like its jurisdiction:
the matcher keeps, per stakeholder, the lists it resolves into, and a rule whose stakeholder is
in none of its lists is anchored nowhere. A list change recomputes the memberships (lists are
few) and reindexes the `lists` rules of the stakeholders whose memberships changed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.alert import Alert, Handling, Status
from subscriptions.audience import Audience, members, unknown_names
from subscriptions.clearance import withheld_reason
from subscriptions.lists import memberships as resolve_memberships
from subscriptions.lists import resolve as resolve_lists
from subscriptions.model import Channel, Contact, DistributionList, Stakeholder, Subscription
from subscriptions.ruleindex import RECENT_LIMIT, RuleIndex
from subscriptions.rules import (
    JURISDICTION,
    AlertFacts,
    GeoArea,
    facts_match,
    jurisdiction_area,
)

NO_CONTACT = "no_contact"
STAKEHOLDER_INACTIVE = "stakeholder_inactive"
STAKEHOLDER_UNKNOWN = "stakeholder_unknown"


@dataclass(frozen=True, slots=True)
class Target:
    """One delivery: an address of a stakeholder on a channel, for one or more subscriptions."""

    stakeholder_id: str
    subscription_id: str
    contact_id: str
    channel: Channel
    address: str
    ack_required: bool
    fallback_channels: tuple[Channel, ...]
    matched_subscription_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Withheld:
    """A matching subscription that may not or cannot be served, and why (a stable code)."""

    stakeholder_id: str
    subscription_id: str
    contact_id: str | None
    channel: Channel | None
    address: str | None
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class MatchResult:
    targets: tuple[Target, ...] = ()
    withheld: tuple[Withheld, ...] = ()


ContactsByChannel = Mapping[Channel, Sequence[Contact]]
_NO_CONTACTS: ContactsByChannel = {}


# ---- shared by the indexed and the brute-force matcher -------------------------------------


def group_contacts(contacts: Iterable[Contact]) -> dict[Channel, list[Contact]]:
    """Active contacts by channel, each list in contact id order."""
    grouped: dict[Channel, list[Contact]] = defaultdict(list)
    for contact in sorted(contacts, key=lambda c: c.id):
        if contact.active:
            grouped[contact.channel].append(contact)
    return dict(grouped)


def status_allowed(status: Status, include_exercises: bool) -> bool:
    """Actual always; Exercise, System and Test only on opt-in; Draft never."""
    if status == Status.ACTUAL:
        return True
    return include_exercises and status != Status.DRAFT


def eligible(
    subscription: Subscription,
    stakeholder: Stakeholder,
    facts: AlertFacts,
    jurisdiction: GeoArea | None,
    memberships: frozenset[str] = frozenset(),
) -> bool:
    return (
        subscription.enabled
        and stakeholder.active
        and status_allowed(facts.status, subscription.include_exercises)
        and facts_match(subscription.rule, facts, jurisdiction, memberships)
    )


def resolve(
    matches: Iterable[tuple[Subscription, Stakeholder]],
    contacts: Mapping[str, ContactsByChannel],
    handling: Handling,
) -> MatchResult:
    """Matching subscriptions -> targets and withheld entries, deduplicated per (stakeholder,
    channel, address) and sorted. The channel is the first in the subscription's order with an
    active contact; fallbacks are the later ones that have a contact and pass clearance. When
    several subscriptions reach one address they merge: the first subscription id and contact
    id, ack required if any requires it, every subscription id, the fallbacks of all."""
    # key -> [subscription id, contact id, ack required, fallbacks, subscription ids]
    drafts: dict[tuple[str, Channel, str], list[Any]] = {}
    withheld: dict[tuple[str, str, str], Withheld] = {}
    for sub, holder in sorted(matches, key=lambda m: m[0].id):
        by_channel = contacts.get(holder.id, _NO_CONTACTS)
        channels = sub.channels if len(sub.channels) < 2 else dict.fromkeys(sub.channels)
        usable = [ch for ch in channels if ch in by_channel]
        if not usable:
            detail = "no active contact on " + (", ".join(sub.channels) or "any channel")
            no_contact = Withheld(holder.id, sub.id, None, None, None, NO_CONTACT, detail)
            withheld.setdefault((holder.id, "", ""), no_contact)
            continue
        channel = usable[0]
        reason = withheld_reason(handling, holder, channel)
        fallbacks = [ch for ch in usable[1:] if withheld_reason(handling, holder, ch) is None]
        for contact in by_channel[channel]:
            if reason is not None:
                entry = Withheld(
                    holder.id, sub.id, contact.id, channel, contact.address, reason.code.value,
                    reason.detail,
                )  # fmt: skip
                withheld.setdefault((holder.id, channel, contact.address), entry)
                continue
            key = (holder.id, channel, contact.address)
            draft = drafts.get(key)
            if draft is None:
                drafts[key] = [sub.id, contact.id, sub.ack_required, fallbacks, [sub.id]]
                continue
            draft[2] = draft[2] or sub.ack_required
            draft[3] = draft[3] + [ch for ch in fallbacks if ch not in draft[3]]
            if draft[4][-1] != sub.id:
                draft[4].append(sub.id)
    targets = tuple(
        Target(key[0], d[0], d[1], key[1], key[2], d[2], tuple(d[3]), tuple(d[4]))
        for key, d in sorted(drafts.items())
    )
    return MatchResult(targets, tuple(w for _, w in sorted(withheld.items())))


def brute_force_match(
    stakeholders: Iterable[Stakeholder],
    contacts: Iterable[Contact],
    subscriptions: Iterable[Subscription],
    alert: Alert,
    lists: Iterable[DistributionList] = (),
) -> MatchResult:
    """The reference: every subscription through the predicate, then `resolve`."""
    facts = AlertFacts.of(alert)
    holders = {s.id: s for s in stakeholders}
    member_of = resolve_memberships({dl.id: dl for dl in lists})
    matches = []
    for sub in subscriptions:
        holder = holders.get(sub.stakeholder_id)
        if holder is None:
            continue
        area = jurisdiction_area(holder.jurisdiction) if sub.rule.area is JURISDICTION else None
        if eligible(sub, holder, facts, area, member_of.get(holder.id, frozenset())):
            matches.append((sub, holder))
    by_holder: dict[str, list[Contact]] = defaultdict(list)
    for contact in contacts:
        by_holder[contact.stakeholder_id].append(contact)
    grouped = {holder_id: group_contacts(cs) for holder_id, cs in by_holder.items()}
    return resolve(matches, grouped, alert.handling)


NO_AREA = GeoArea()  # shared by every stakeholder without a jurisdiction


def _area_of(holder: Stakeholder) -> GeoArea:
    jurisdiction = holder.jurisdiction
    if not jurisdiction.geocodes and not jurisdiction.polygons:
        return NO_AREA
    return GeoArea(jurisdiction.geocodes, jurisdiction.polygons)


class Matcher:
    """The subscription directory indexed for matching; see the module docstring.
    `recent_limit` is the polygon count scanned linearly before the STRtree is rebuilt."""

    def __init__(self, recent_limit: int = RECENT_LIMIT) -> None:
        self._recent_limit = recent_limit
        self._reset()

    def _reset(self) -> None:
        self._stakeholders: dict[str, Stakeholder] = {}
        self._areas: dict[str, GeoArea] = {}
        self._contacts: dict[str, Contact] = {}
        self._contact_ids: defaultdict[str, set[str]] = defaultdict(set)
        self._contacts_by_holder: dict[str, dict[Channel, list[Contact]]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._subscription_ids: defaultdict[str, set[str]] = defaultdict(set)
        self._lists: dict[str, DistributionList] = {}
        self._memberships: dict[str, frozenset[str]] = {}
        self._index = RuleIndex(self._recent_limit)

    def load(
        self,
        stakeholders: Iterable[Stakeholder],
        contacts: Iterable[Contact],
        subscriptions: Iterable[Subscription],
        lists: Iterable[DistributionList] = (),
    ) -> None:
        """Replace everything; the polygon tree is built once at the end."""
        self._reset()
        self._lists = {dl.id: dl for dl in lists}
        self._memberships = resolve_memberships(self._lists)
        for holder in stakeholders:
            self._stakeholders[holder.id] = holder
            self._areas[holder.id] = _area_of(holder)
        for contact in contacts:
            self._contacts[contact.id] = contact
            self._contact_ids[contact.stakeholder_id].add(contact.id)
        for holder_id in self._contact_ids:
            self._regroup_contacts(holder_id)
        for sub in subscriptions:
            self._subscriptions[sub.id] = sub
            self._subscription_ids[sub.stakeholder_id].add(sub.id)
            self._reindex(sub.id, defer=True)
        self._index.rebuild_polygons()

    # -- incremental updates

    def upsert_stakeholder(self, stakeholder: Stakeholder) -> None:
        old = self._stakeholders.get(stakeholder.id)
        self._stakeholders[stakeholder.id] = stakeholder
        moved = old is None or old.jurisdiction != stakeholder.jurisdiction
        if moved:
            self._areas[stakeholder.id] = _area_of(stakeholder)
        ids = self._subscription_ids.get(stakeholder.id, set())
        if old is None or old.active != stakeholder.active:
            affected = sorted(ids)
        elif moved:
            affected = sorted(i for i in ids if self._subscriptions[i].rule.area is JURISDICTION)
        else:
            affected = []
        for sub_id in affected:
            self._reindex(sub_id)

    def remove_stakeholder(self, stakeholder_id: str) -> None:
        """Its subscriptions and contacts stay, dormant, until it comes back."""
        if self._stakeholders.pop(stakeholder_id, None) is None:
            return
        del self._areas[stakeholder_id]
        for sub_id in sorted(self._subscription_ids.get(stakeholder_id, ())):
            self._index.remove(sub_id)

    def upsert_contact(self, contact: Contact) -> None:
        old = self._contacts.get(contact.id)
        self._contacts[contact.id] = contact
        if old is not None and old.stakeholder_id != contact.stakeholder_id:
            self._contact_ids[old.stakeholder_id].discard(contact.id)
            self._regroup_contacts(old.stakeholder_id)
        self._contact_ids[contact.stakeholder_id].add(contact.id)
        self._regroup_contacts(contact.stakeholder_id)

    def remove_contact(self, contact_id: str) -> None:
        old = self._contacts.pop(contact_id, None)
        if old is not None:
            self._contact_ids[old.stakeholder_id].discard(contact_id)
            self._regroup_contacts(old.stakeholder_id)

    def upsert_subscription(self, subscription: Subscription) -> None:
        old = self._subscriptions.get(subscription.id)
        if old is not None and old.stakeholder_id != subscription.stakeholder_id:
            self._subscription_ids[old.stakeholder_id].discard(subscription.id)
        self._subscriptions[subscription.id] = subscription
        self._subscription_ids[subscription.stakeholder_id].add(subscription.id)
        self._reindex(subscription.id)

    def remove_subscription(self, subscription_id: str) -> None:
        old = self._subscriptions.pop(subscription_id, None)
        if old is not None:
            self._subscription_ids[old.stakeholder_id].discard(subscription_id)
            self._index.remove(subscription_id)

    def upsert_list(self, distribution_list: DistributionList) -> None:
        self._lists[distribution_list.id] = distribution_list
        self._relist()

    def remove_list(self, list_id: str) -> None:
        if self._lists.pop(list_id, None) is not None:
            self._relist()

    def _relist(self) -> None:
        """Recompute memberships; reindex the `lists` rules of stakeholders whose changed."""
        old = self._memberships
        self._memberships = new = resolve_memberships(self._lists)
        for holder_id in sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)):
            for sub_id in sorted(self._subscription_ids.get(holder_id, ())):
                if self._subscriptions[sub_id].rule.lists is not None:
                    self._reindex(sub_id)

    def _regroup_contacts(self, holder_id: str) -> None:
        contacts = (self._contacts[i] for i in self._contact_ids.get(holder_id, ()))
        grouped = group_contacts(contacts)
        if grouped:
            self._contacts_by_holder[holder_id] = grouped
        else:
            self._contacts_by_holder.pop(holder_id, None)

    def _reindex(self, sub_id: str, defer: bool = False) -> None:
        sub = self._subscriptions.get(sub_id)
        holder = None if sub is None else self._stakeholders.get(sub.stakeholder_id)
        if sub is None or holder is None or not (sub.enabled and holder.active):
            self._index.remove(sub_id)
            return
        member_of = self._memberships.get(holder.id, frozenset())
        self._index.add(sub_id, sub.rule, self._areas[holder.id], defer, member_of)

    # -- queries

    def match(self, alert: Alert) -> MatchResult:
        """Targets and withheld entries for `alert`; equal to `brute_force_match` on the same
        directory."""
        if alert.status == Status.DRAFT:
            return MatchResult()
        facts = AlertFacts.of(alert)
        matches = []
        for sub_id in self._index.candidates(facts):
            sub = self._subscriptions[sub_id]
            holder = self._stakeholders[sub.stakeholder_id]
            member_of = self._memberships.get(holder.id, frozenset())
            if eligible(sub, holder, facts, self._areas[holder.id], member_of):
                matches.append((sub, holder))
        return resolve(matches, self._contacts_by_holder, alert.handling)

    def rule_selects(self, alert: Alert, subscription: Subscription) -> bool:
        """Whether `subscription`, saved or not, selects `alert`: the predicate `match` applies
        to each candidate, with its stakeholder's jurisdiction and lists as the matcher knows
        them (whether the stakeholder may then receive it is the clearance check's)."""
        holder = self._stakeholders.get(subscription.stakeholder_id)
        if alert.status == Status.DRAFT or holder is None:
            return False
        member_of = self._memberships.get(holder.id, frozenset())
        facts = AlertFacts.of(alert)
        return eligible(subscription, holder, facts, self._areas[holder.id], member_of)

    def match_audience(self, alert: Alert, audiences: Iterable[Audience]) -> MatchResult:
        """Targets and withheld entries for an ad-hoc alert: exactly the members of
        `audiences` (`subscriptions.audience`), through `resolve` like any match; a member
        deactivated or deleted since it was named is withheld, saying so."""
        if alert.status == Status.DRAFT:
            return MatchResult()
        resolved = resolve_lists(self._lists)
        matches: list[tuple[Subscription, Stakeholder]] = []
        absent: list[Withheld] = []
        for audience in audiences:
            found = members(
                audience, alert, self._stakeholders, resolved, self._areas, self._memberships
            )
            for holder_id in sorted(found):
                holder = self._stakeholders.get(holder_id)
                if holder is not None and holder.active:
                    matches.append((audience.subscription_for(holder_id), holder))
                    continue
                reason = STAKEHOLDER_UNKNOWN if holder is None else STAKEHOLDER_INACTIVE
                detail = "the stakeholder was deleted" if holder is None else "it is deactivated"
                absent.append(
                    Withheld(holder_id, audience.send_id, None, None, None, reason, detail)
                )
        result = resolve(matches, self._contacts_by_holder, alert.handling)
        return MatchResult(result.targets, result.withheld + tuple(absent))

    def audience_size(self, alert: Alert, audience: Audience) -> int:
        """How many stakeholders the audience names for this alert."""
        resolved = resolve_lists(self._lists)
        return len(
            members(audience, alert, self._stakeholders, resolved, self._areas, self._memberships)
        )

    def unknown_in(self, audience: Audience) -> list[tuple[str, str]]:
        """(JSON path, id) of the lists and stakeholders the audience names that do not exist."""
        return unknown_names(audience, self._stakeholders, self._lists)

    def candidate_ids(self, alert: Alert) -> frozenset[str]:
        """Diagnostics: the subscriptions the index hands to the predicate for `alert`."""
        return frozenset(self._index.candidates(AlertFacts.of(alert)))

    def stakeholder(self, stakeholder_id: str) -> Stakeholder | None:
        """The stakeholder as the matcher knows it now (None if deleted)."""
        return self._stakeholders.get(stakeholder_id)

    def contact(self, contact_id: str) -> Contact | None:
        """The contact as the matcher knows it now (None if deleted)."""
        return self._contacts.get(contact_id)

    def subscription(self, subscription_id: str) -> Subscription | None:
        """The subscription as the matcher knows it now (None if deleted)."""
        return self._subscriptions.get(subscription_id)

    def lists_of(self, stakeholder_id: str) -> frozenset[str]:
        """The distribution lists the stakeholder resolves into, as the matcher knows them."""
        return self._memberships.get(stakeholder_id, frozenset())

    def __len__(self) -> int:
        return len(self._subscriptions)
