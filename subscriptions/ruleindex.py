"""The rule index inside the matcher: each rule anchored in one inverted index, the most
selective it can use, and polygons in an STRtree over a static base plus a short list of
recent changes (see `subscriptions.matcher` for the whole story). Pure: no I/O."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from core.alert import Circle
from subscriptions.geometry import circle_box
from subscriptions.rules import JURISDICTION, AlertFacts, GeoArea, Rule

RECENT_LIMIT = 64
"""Polygons added since the last STRtree build that are scanned linearly; more -> rebuild."""


class PolygonIndex:
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


class RuleIndex:
    """Subscription ids by anchor; `candidates` is a superset of the matching ones."""

    def __init__(self, recent_limit: int) -> None:
        self._postings: dict[str, dict[Hashable, set[str]]] = defaultdict(dict)
        self._always: set[str] = set()
        self._polygons = PolygonIndex(recent_limit)
        self._anchors: dict[str, _Anchor] = {}

    def add(
        self,
        sub_id: str,
        rule: Rule,
        jurisdiction: GeoArea | None,
        defer: bool,
        memberships: frozenset[str] = frozenset(),
    ) -> None:
        """Anchor the rule; `jurisdiction` and `memberships` are its stakeholder's."""
        self.remove(sub_id)
        if rule.lists is not None and rule.lists.isdisjoint(memberships):
            return  # the stakeholder is in none of the rule's lists: anchored nowhere
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
