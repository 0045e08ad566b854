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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from core.alert import Alert, Circle, Handling, Status
from subscriptions.clearance import withheld_reason
from subscriptions.model import Channel, Contact, Stakeholder, Subscription
from subscriptions.rules import (
    JURISDICTION,
    AlertFacts,
    GeoArea,
    Rule,
    circle_box,
    facts_match,
    jurisdiction_area,
)

NO_CONTACT = "no_contact"


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
) -> bool:
    return (
        subscription.enabled
        and stakeholder.active
        and status_allowed(facts.status, subscription.include_exercises)
        and facts_match(subscription.rule, facts, jurisdiction)
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
) -> MatchResult:
    """The reference: every subscription through the predicate, then `resolve`."""
    facts = AlertFacts.of(alert)
    holders = {s.id: s for s in stakeholders}
    matches = []
    for sub in subscriptions:
        holder = holders.get(sub.stakeholder_id)
        if holder is None:
            continue
        area = jurisdiction_area(holder.jurisdiction) if sub.rule.area is JURISDICTION else None
        if eligible(sub, holder, facts, area):
            matches.append((sub, holder))
    by_holder: dict[str, list[Contact]] = defaultdict(list)
    for contact in contacts:
        by_holder[contact.stakeholder_id].append(contact)
    grouped = {holder_id: group_contacts(cs) for holder_id, cs in by_holder.items()}
    return resolve(matches, grouped, alert.handling)


# ---- the index -----------------------------------------------------------------------------


RECENT_LIMIT = 64
"""Polygons added since the last STRtree build that are scanned linearly; more -> rebuild."""


class _PolygonIndex:
    """Polygons -> subscription ids: an STRtree over a static base, a linear recent list, and
    tombstones (entries removed from the dict but still in the tree)."""

    def __init__(self, recent_limit: int) -> None:
        self._recent_limit = recent_limit
        self._entries: dict[int, tuple[BaseGeometry, str]] = {}
        self._next_id = 0
        self._base: list[int] = []
        self._tree: STRtree | None = None
        self._recent: dict[int, tuple[float, ...]] = {}
        self._tombstones = 0

    def add(self, shape: BaseGeometry, sub_id: str, *, defer: bool = False) -> int:
        entry_id = self._next_id
        self._next_id += 1
        self._entries[entry_id] = (shape, sub_id)
        self._recent[entry_id] = tuple(shape.bounds)
        if not defer:
            self._maybe_rebuild()
        return entry_id

    def remove(self, entry_id: int) -> None:
        del self._entries[entry_id]
        if self._recent.pop(entry_id, None) is None:
            self._tombstones += 1
        self._maybe_rebuild()

    def _maybe_rebuild(self) -> None:
        limit = self._recent_limit
        if len(self._recent) > limit or self._tombstones > max(limit, len(self._base) // 4):
            self.rebuild()

    def rebuild(self) -> None:
        self._base = list(self._entries)
        shapes = [self._entries[e][0] for e in self._base]
        self._tree = STRtree(shapes) if shapes else None
        self._recent = {}
        self._tombstones = 0

    def query(self, polygons: Sequence[BaseGeometry], circles: Sequence[Circle]) -> set[str]:
        """Subscriptions with a polygon whose bounding box meets one of the alert's shapes."""
        if not polygons and not circles:
            return set()
        boxes = [tuple(p.bounds) for p in polygons] + [circle_box(c) for c in circles]
        found: set[str] = set()
        if self._tree is not None:
            corners = np.array(boxes)
            probes = shapely.box(corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3])
            for position in set(self._tree.query(probes)[1].tolist()):
                entry = self._entries.get(self._base[position])
                if entry is not None:
                    found.add(entry[1])
        for entry_id, b in self._recent.items():
            if any(a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3] for a in boxes):
                found.add(self._entries[entry_id][1])
        return found


@dataclass(frozen=True, slots=True)
class _Anchor:
    postings: tuple[tuple[str, Hashable], ...] = ()
    polygon_entries: tuple[int, ...] = ()
    always: bool = False


def _keyword_anchor(phrase: tuple[str, ...]) -> str:
    return max(phrase, key=len)


def _area_of(holder: Stakeholder) -> GeoArea:
    return GeoArea(holder.jurisdiction.geocodes, holder.jurisdiction.polygons)


def _postings_for(rule: Rule) -> tuple[tuple[str, Hashable], ...] | None:
    """Where a rule without area is anchored: its most selective set-valued field."""
    fields: tuple[tuple[str, Iterable[Hashable] | None], ...] = (
        ("event_code", rule.event_codes),
        ("event", rule.events),
        ("keyword", None if rule.keywords is None else map(_keyword_anchor, rule.keywords)),
        ("caveat", rule.caveats),
        ("sender", rule.senders),
        ("category", rule.categories),
        ("tlp", rule.tlp),
        ("kind", rule.kinds),
        ("msg_type", rule.msg_types),
        ("status", rule.statuses),
    )
    for name, values in fields:
        if values is not None:
            return tuple((name, v) for v in values)
    return None


class _RuleIndex:
    """Subscription ids by anchor; `candidates` is a superset of the matching ones."""

    def __init__(self, recent_limit: int) -> None:
        self._postings: dict[str, dict[Hashable, set[str]]] = defaultdict(dict)
        self._always: set[str] = set()
        self._polygons = _PolygonIndex(recent_limit)
        self._anchors: dict[str, _Anchor] = {}

    def add(self, sub_id: str, rule: Rule, jurisdiction: GeoArea | None, defer: bool) -> None:
        self.remove(sub_id)
        if rule.area is not None:
            area = jurisdiction if rule.area is JURISDICTION else rule.area
            if not isinstance(area, GeoArea) or area.is_empty:
                return  # can never match: anchored nowhere
            postings = tuple(("geo", k) for k in area.keys) + tuple(
                ("geo_child", p) for p in area.parents
            )
            entries = tuple(self._polygons.add(s, sub_id, defer=defer) for s in area.shapes)
            anchor = _Anchor(postings, entries)
        else:
            found = _postings_for(rule)
            anchor = _Anchor(found) if found is not None else _Anchor(always=True)
        for name, value in anchor.postings:
            self._postings[name].setdefault(value, set()).add(sub_id)
        if anchor.always:
            self._always.add(sub_id)
        self._anchors[sub_id] = anchor

    def remove(self, sub_id: str) -> None:
        anchor = self._anchors.pop(sub_id, None)
        if anchor is None:
            return
        for name, value in anchor.postings:
            posting = self._postings[name]
            ids = posting[value]
            ids.discard(sub_id)
            if not ids:
                del posting[value]
        for entry_id in anchor.polygon_entries:
            self._polygons.remove(entry_id)
        self._always.discard(sub_id)

    def rebuild_polygons(self) -> None:
        self._polygons.rebuild()

    def candidates(self, facts: AlertFacts) -> set[str]:
        found = set(self._always)
        lookups: tuple[tuple[str, Iterable[Hashable]], ...] = (
            ("geo", facts.geo_keys),
            ("geo", facts.geo_parents),
            ("geo_child", facts.geo_keys),
            ("event_code", facts.event_codes),
            ("event", facts.events),
            ("keyword", facts.words),
            ("caveat", facts.caveats),
            ("sender", (facts.sender,)),
            ("category", facts.categories),
            ("tlp", (facts.tlp,)),
            ("kind", (facts.kind,)),
            ("msg_type", (facts.msg_type,)),
            ("status", (facts.status,)),
        )
        for name, values in lookups:
            posting = self._postings.get(name)
            if posting:
                for value in values:
                    ids = posting.get(value)
                    if ids:
                        found.update(ids)
        found.update(self._polygons.query(facts.polygons, facts.circles))
        return found


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
        self._index = _RuleIndex(self._recent_limit)

    def load(
        self,
        stakeholders: Iterable[Stakeholder],
        contacts: Iterable[Contact],
        subscriptions: Iterable[Subscription],
    ) -> None:
        """Replace everything; the polygon tree is built once at the end."""
        self._reset()
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
        self._index.add(sub_id, sub.rule, self._areas[holder.id], defer)

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
            if eligible(sub, holder, facts, self._areas[holder.id]):
                matches.append((sub, holder))
        return resolve(matches, self._contacts_by_holder, alert.handling)

    def candidate_ids(self, alert: Alert) -> frozenset[str]:
        """Diagnostics: the subscriptions the index hands to the predicate for `alert`."""
        return frozenset(self._index.candidates(AlertFacts.of(alert)))

    def stakeholder(self, stakeholder_id: str) -> Stakeholder | None:
        """The stakeholder as the matcher knows it now (None if deleted)."""
        return self._stakeholders.get(stakeholder_id)

    def __len__(self) -> int:
        return len(self._subscriptions)
