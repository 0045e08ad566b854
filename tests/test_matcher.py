"""The matcher (subscriptions/matcher.py): behaviour (channel choice, fallbacks, no_contact,
clearance, exercise opt-in, deduplication, ordering, incremental updates) and a property: on
random directories (distribution lists and rules naming them included), rules and alerts,
and after random sequences of updates, the indexed `Matcher` returns exactly what
`brute_force_match` returns. Also the list graph itself: resolution through nesting against
a plain fixpoint, and the cycle an added member would close."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.alert import Alert, Area, Circle, Handling, Info, Kind, MsgType, NamedValue, Status, Tlp
from subscriptions.codec import stakeholder_model
from subscriptions.lists import cycle_through, memberships, resolve
from subscriptions.matcher import (
    NO_CONTACT,
    Matcher,
    MatchResult,
    Target,
    brute_force_match,
)
from subscriptions.model import (
    Channel,
    Clearance,
    Contact,
    DistributionList,
    Jurisdiction,
    Sector,
    Stakeholder,
    StakeholderKind,
    Subscription,
)
from subscriptions.rules import GeoArea, Rule
from testbed.directory import stakeholder_fields

Ring = tuple[tuple[float, float], ...]
EMAIL, SMS, WEBHOOK = Channel.EMAIL, Channel.SMS, Channel.WEBHOOK
RED_CLEARANCE = Clearance(Tlp.RED, frozenset({"LES", "PII"}), law_enforcement=True)


def square(lat: float, lon: float, size: float = 1.0) -> Ring:
    return ((lat, lon), (lat, lon + size), (lat + size, lon + size), (lat + size, lon), (lat, lon))


def holder(
    sid: str = "s1",
    *,
    geocodes: Sequence[tuple[str, str]] = (("SAME", "006109"),),
    polygons: Sequence[Ring] = (),
    kind: StakeholderKind = StakeholderKind.INDIVIDUAL,
    clearance: Clearance = RED_CLEARANCE,
    active: bool = True,
) -> Stakeholder:
    return Stakeholder(
        id=sid,
        name=f"Stakeholder {sid}",
        organization="Example County",
        sector=Sector.LAW_ENFORCEMENT,
        kind=kind,
        jurisdiction=Jurisdiction(tuple(NamedValue(n, v) for n, v in geocodes), tuple(polygons)),
        clearance=clearance,
        active=active,
    )


def contact(
    cid: str, sid: str = "s1", channel: Channel = EMAIL, address: str = "", active: bool = True
) -> Contact:
    return Contact(cid, sid, channel, address or f"{cid}@example.gov", active=active)


def sub(
    uid: str,
    sid: str = "s1",
    rule: dict[str, Any] | None = None,
    channels: tuple[Channel, ...] = (EMAIL,),
    **options: Any,
) -> Subscription:
    document = {"area": "jurisdiction"} if rule is None else rule
    return Subscription(uid, sid, Rule.from_json(document), channels, **options)


def make_alert(
    *geocodes: tuple[str, str],
    status: Status = Status.ACTUAL,
    tlp: Tlp = Tlp.CLEAR,
    caveats: tuple[str, ...] = (),
    event: str = "Tornado Warning",
) -> Alert:
    area = Area("area", geocodes=tuple(NamedValue(n, v) for n, v in geocodes))
    info = Info(
        "en-US",
        ("Met",),
        event,
        "Immediate",
        "Severe",
        "Observed",
        headline="Tornado warning",
        event_codes=(NamedValue("SAME", "TOR"),),
        areas=(area,),
    )
    return Alert(
        Kind.CAP,
        "A-1",
        "w-nws.webmaster@noaa.gov",
        datetime(2026, 11, 24, tzinfo=UTC),
        "2026-11-24T00:00:00Z",
        status,
        MsgType.ALERT,
        "Public",
        Handling(tlp, caveats),
        (info,),
    )


HERE = make_alert(("SAME", "006109"))


def both(
    stakeholders: list[Stakeholder],
    contacts: list[Contact],
    subscriptions: list[Subscription],
    alert: Alert = HERE,
) -> MatchResult:
    """The indexed result, after checking it equals the brute-force one."""
    matcher = Matcher()
    matcher.load(stakeholders, contacts, subscriptions)
    result = matcher.match(alert)
    assert result == brute_force_match(stakeholders, contacts, subscriptions, alert)
    return result


# ---- behaviour -----------------------------------------------------------------------------


def test_one_target() -> None:
    result = both([holder()], [contact("c1")], [sub("u1", ack_required=True)])
    assert result == MatchResult(
        targets=(Target("s1", "u1", "c1", EMAIL, "c1@example.gov", True, (), ("u1",)),)
    )


def test_no_match_outside_the_jurisdiction() -> None:
    assert both([holder()], [contact("c1")], [sub("u1")], make_alert(("SAME", "006107"))) == (
        MatchResult()
    )


def test_first_channel_with_a_contact_wins_and_later_ones_are_fallbacks() -> None:
    contacts = [
        contact("c1", channel=SMS, address="+15550001"),
        contact("c2"),
        contact("c3", channel=WEBHOOK, address="https://h.example/x"),
    ]
    subscriptions = [sub("u1", channels=(SMS, EMAIL, WEBHOOK))]
    (target,) = both([holder()], contacts, subscriptions).targets
    assert (target.channel, target.fallback_channels) == (SMS, (EMAIL, WEBHOOK))
    (target,) = both([holder()], contacts[1:], subscriptions).targets
    assert (target.channel, target.fallback_channels) == (EMAIL, (WEBHOOK,))


def test_fallbacks_skip_channels_without_contact_or_clearance() -> None:
    contacts = [contact("c1"), contact("c3", channel=WEBHOOK, address="https://h.example/x")]
    subscriptions = [sub("u1", channels=(EMAIL, SMS, WEBHOOK))]
    (target,) = both([holder()], contacts, subscriptions).targets
    assert target.fallback_channels == (WEBHOOK,)
    red = make_alert(("SAME", "006109"), tlp=Tlp.RED)
    (target,) = both([holder()], contacts, subscriptions, red).targets
    assert target.fallback_channels == ()


def test_a_target_per_active_contact_of_the_channel() -> None:
    contacts = [
        contact("c2"),
        contact("c1"),
        contact("c3", active=False),
        contact("c4", channel=SMS, address="+1555"),
    ]
    result = both([holder()], contacts, [sub("u1", channels=(EMAIL, SMS))])
    assert [(t.contact_id, t.channel) for t in result.targets] == [("c1", EMAIL), ("c2", EMAIL)]
    assert all(t.fallback_channels == (SMS,) for t in result.targets)


def test_no_contact_is_withheld_not_dropped() -> None:
    contacts = [contact("c1", active=False), contact("c2", channel=WEBHOOK, address="https://x")]
    result = both([holder()], contacts, [sub("u1", channels=(EMAIL, SMS))])
    assert result.targets == ()
    (withheld,) = result.withheld
    assert (withheld.reason, withheld.channel, withheld.contact_id) == (NO_CONTACT, None, None)
    assert withheld.subscription_id == "u1"


def test_clearance_failures_become_withheld_entries() -> None:
    group = holder(kind=StakeholderKind.GROUP)
    contacts = [contact("c1"), contact("c2", address="desk@example.gov")]
    red = make_alert(("SAME", "006109"), tlp=Tlp.RED)
    result = both([group], contacts, [sub("u1"), sub("u2")], red)
    assert result.targets == ()
    assert [(w.contact_id, w.reason, w.subscription_id) for w in result.withheld] == [
        ("c1", "red_requires_named_individual", "u1"),
        ("c2", "red_requires_named_individual", "u1"),
    ]


def test_red_by_webhook_is_withheld_without_trying_the_next_channel() -> None:
    contacts = [contact("c1"), contact("c2", channel=WEBHOOK, address="https://x")]
    red = make_alert(("SAME", "006109"), tlp=Tlp.RED)
    result = both([holder()], contacts, [sub("u1", channels=(WEBHOOK, EMAIL))], red)
    assert result.targets == ()
    assert [w.reason for w in result.withheld] == ["red_not_by_webhook"]


def test_dedupe_one_target_per_stakeholder_channel_address() -> None:
    contacts = [
        contact("c1", address="duty@example.gov"),
        contact("c0", address="duty@example.gov"),
    ]
    subscriptions = [
        sub("u2", rule={"eventCodes": ["TOR"]}, ack_required=True),
        sub("u1"),
        sub("u3", rule={"kinds": ["sar"]}),
    ]
    (target,) = both([holder()], contacts, subscriptions).targets
    assert target == Target("s1", "u1", "c0", EMAIL, "duty@example.gov", True, (), ("u1", "u2"))


def test_dedupe_withheld_entries() -> None:
    holders = [holder(clearance=Clearance(Tlp.CLEAR))]
    amber = make_alert(("SAME", "006109"), tlp=Tlp.AMBER)
    result = both(holders, [contact("c1")], [sub("u2"), sub("u1")], amber)
    assert [(w.subscription_id, w.reason) for w in result.withheld] == [
        ("u1", "tlp_above_clearance")
    ]


def test_several_channels_of_one_stakeholder_are_separate_targets() -> None:
    contacts = [contact("c1"), contact("c2", channel=SMS, address="+1555")]
    subscriptions = [sub("u1", channels=(EMAIL,)), sub("u2", channels=(SMS,))]
    result = both([holder()], contacts, subscriptions)
    assert [(t.channel, t.subscription_id) for t in result.targets] == [(EMAIL, "u1"), (SMS, "u2")]


@dataclass
class ExerciseCase:
    status: Status
    include_exercises: bool
    delivered: bool


def test_exercise_opt_in() -> None:
    cases = [
        ExerciseCase(Status.ACTUAL, False, True),
        ExerciseCase(Status.ACTUAL, True, True),
        ExerciseCase(Status.EXERCISE, False, False),
        ExerciseCase(Status.EXERCISE, True, True),
        ExerciseCase(Status.TEST, False, False),
        ExerciseCase(Status.TEST, True, True),
        ExerciseCase(Status.SYSTEM, False, False),
        ExerciseCase(Status.SYSTEM, True, True),
        ExerciseCase(Status.DRAFT, False, False),
        ExerciseCase(Status.DRAFT, True, False),
    ]
    for case in cases:
        alert = make_alert(("SAME", "006109"), status=case.status)
        subscriptions = [sub("u1", include_exercises=case.include_exercises)]
        result = both([holder()], [contact("c1")], subscriptions, alert)
        assert bool(result.targets) is case.delivered, case


def test_inactive_stakeholder_and_disabled_subscription_get_nothing() -> None:
    assert both([holder(active=False)], [contact("c1")], [sub("u1")]) == MatchResult()
    assert both([holder()], [contact("c1")], [sub("u1", enabled=False)]) == MatchResult()
    assert both([], [contact("c1")], [sub("u1")]) == MatchResult()


def test_output_is_sorted() -> None:
    holders = [holder("s2"), holder("s1"), holder("s3", clearance=Clearance(Tlp.CLEAR))]
    contacts = [
        contact(f"c{s}{i}", f"s{s}", address=f"{9 - i}@x") for s in (1, 2, 3) for i in (1, 2)
    ]
    subscriptions = [sub(f"u{s}", f"s{s}") for s in (3, 1, 2)]
    result = both(holders, contacts, subscriptions, make_alert(("SAME", "006109"), tlp=Tlp.GREEN))
    assert [(t.stakeholder_id, t.address) for t in result.targets] == [
        ("s1", "7@x"),
        ("s1", "8@x"),
        ("s2", "7@x"),
        ("s2", "8@x"),
    ]
    assert [(w.stakeholder_id, w.address) for w in result.withheld] == [
        ("s3", "7@x"),
        ("s3", "8@x"),
    ]


def test_index_prunes_to_the_alert_area() -> None:
    holders = [
        holder(f"s{i}", geocodes=[("SAME", f"0{6 + i % 40:02d}{i // 40 * 2 + 1:03d}")])
        for i in range(1000)
    ]
    subscriptions = [sub(f"u{i}", f"s{i}") for i in range(1000)]
    subscriptions.append(sub("keyword", "s1", rule={"keywords": ["tornado"]}))
    subscriptions.append(sub("catch-all", "s2", rule={"minSeverity": "Minor"}))
    matcher = Matcher()
    matcher.load(holders, [], subscriptions)
    alert = make_alert(("SAME", "006001"))
    assert matcher.candidate_ids(alert) == {"u0", "keyword", "catch-all"}


# ---- incremental updates -------------------------------------------------------------------


def test_incremental_updates_show_in_the_next_match() -> None:
    matcher = Matcher()
    matcher.load([holder()], [contact("c1")], [])
    assert matcher.match(HERE) == MatchResult()

    matcher.upsert_subscription(sub("u1", rule={"eventCodes": ["TOR"]}))
    assert [t.subscription_id for t in matcher.match(HERE).targets] == ["u1"]

    matcher.upsert_subscription(sub("u1", rule={"eventCodes": ["FFW"]}))
    assert matcher.match(HERE) == MatchResult()

    matcher.upsert_subscription(sub("u1"))  # area: jurisdiction (SAME 006109)
    assert len(matcher.match(HERE).targets) == 1

    matcher.upsert_stakeholder(holder(geocodes=[("UGC", "NVC003")]))
    assert matcher.match(HERE) == MatchResult()
    assert len(matcher.match(make_alert(("SAME", "032003"))).targets) == 1

    matcher.upsert_stakeholder(holder(geocodes=[], polygons=[square(0, 0)]))
    assert matcher.match(make_alert(("SAME", "032003"))) == MatchResult()

    matcher.upsert_stakeholder(holder(active=False))
    assert matcher.match(HERE) == MatchResult()
    matcher.upsert_stakeholder(holder())
    assert len(matcher.match(HERE).targets) == 1

    matcher.upsert_contact(contact("c1", active=False))
    assert [w.reason for w in matcher.match(HERE).withheld] == [NO_CONTACT]
    matcher.upsert_contact(contact("c1"))
    matcher.upsert_contact(contact("c2", channel=SMS, address="+1555"))
    matcher.remove_contact("c1")
    assert [w.reason for w in matcher.match(HERE).withheld] == [NO_CONTACT]

    matcher.upsert_subscription(sub("u1", channels=(EMAIL, SMS)))
    assert [t.channel for t in matcher.match(HERE).targets] == [SMS]

    matcher.remove_stakeholder("s1")
    assert matcher.match(HERE) == MatchResult()
    matcher.upsert_stakeholder(holder())
    assert len(matcher.match(HERE).targets) == 1

    matcher.remove_subscription("u1")
    assert matcher.match(HERE) == MatchResult()


def test_subscription_moving_to_another_stakeholder() -> None:
    matcher = Matcher()
    nevada = holder("s2", geocodes=[("SAME", "032003")])
    matcher.load([holder(), nevada], [contact("c1"), contact("c2", "s2")], [sub("u1")])
    matcher.upsert_subscription(sub("u1", "s2"))
    assert matcher.match(HERE) == MatchResult()
    matcher.upsert_stakeholder(replace(nevada, jurisdiction=holder().jurisdiction))
    assert [t.stakeholder_id for t in matcher.match(HERE).targets] == ["s2"]


def test_polygon_index_rebuilds_keep_results() -> None:
    matcher = Matcher(recent_limit=2)
    holders = [holder(f"s{i}", geocodes=[], polygons=[square(i, i)]) for i in range(12)]
    contacts = [contact(f"c{i}", f"s{i}") for i in range(12)]
    subscriptions = [sub(f"u{i}", f"s{i}") for i in range(12)]
    matcher.load(holders[:3], contacts, subscriptions)
    for h in holders[3:]:
        matcher.upsert_stakeholder(h)
    for i in range(0, 12, 3):
        matcher.remove_subscription(f"u{i}")
        subscriptions.remove(next(s for s in subscriptions if s.id == f"u{i}"))
    for i in range(12):
        alert = replace(HERE, infos=(_circle_info(i + 0.5, i + 0.5),))
        assert matcher.match(alert) == brute_force_match(holders, contacts, subscriptions, alert)
        assert len(matcher.match(alert).targets) == (0 if i % 3 == 0 else 1)


def _circle_info(lat: float, lon: float) -> Info:
    return replace(HERE.infos[0], areas=(Area("point", circles=(Circle(lat, lon, 0.0),)),))


# ---- property: indexed == brute force ------------------------------------------------------

GEOCODES = [
    ("SAME", "006109"),
    ("SAME", "106109"),
    ("FIPS6", "06109"),
    ("SAME", "006000"),
    ("UGC", "CAC109"),
    ("UGC", "CAZ013"),
    ("UGC", "CAZALL"),
    ("SAME", "032003"),
    ("UGC", "NVC003"),
    ("FIPS6", "032000"),
    ("UGC", "NVZ020"),
    ("SAME", "006107"),
]
ALERT_GEOCODES = [*GEOCODES, ("ZIP", "90210"), ("SAME", "bogus")]
RINGS = [square(0, 0), square(0, 1), square(5, 5), square(0.4, 0.4, 0.2), square(1, 1, 0.5)]
CIRCLES = [
    Circle(0.5, 1.1, 11.13),
    Circle(0.5, 1.1, 11.10),
    Circle(5.5, 5.5, 0.0),
    Circle(20.0, 20.0, 5.0),
    Circle(0.5, 0.5, 0.0),
    Circle(1.0, 2.0, 0.0),
]
EVENTS = ["Tornado Warning", "Flash Flood Warning", "Active Shooter"]
TEXTS = [
    None,
    "Tornado warning for the river bridge",
    "Active shooter near the fire station",
    "firearm stolen",
]
SENDERS = ["w-nws.webmaster@noaa.gov", "sar@fusion.example.gov"]
CLEARANCES = [
    RED_CLEARANCE,
    Clearance(Tlp.GREEN),
    Clearance(Tlp.AMBER, frozenset({"LES"})),
    Clearance(Tlp.AMBER_STRICT, frozenset({"LES", "PII"}), law_enforcement=True),
]
STAKEHOLDER_IDS = [f"s{i}" for i in range(5)]
CONTACT_IDS = [f"c{i}" for i in range(8)]
SUBSCRIPTION_IDS = [f"u{i}" for i in range(8)]
LIST_IDS = ["L0", "L1", "L2", "L3"]
MOSTLY_TRUE = [True, True, True, False]


def some(values: Sequence[Any], min_size: int = 1, max_size: int = 2) -> st.SearchStrategy[Any]:
    return st.lists(st.sampled_from(values), min_size=min_size, max_size=max_size, unique=True)


def _geo_area(draw: st.DrawFn) -> dict[str, Any]:
    area: dict[str, Any] = {}
    codes = draw(some(GEOCODES, 0, 2))
    rings = draw(some(RINGS, 0, 1))
    if codes or not rings:
        area["geocodes"] = [{"valueName": n, "value": v} for n, v in codes or GEOCODES[:1]]
    if rings:
        area["polygons"] = [[list(p) for p in ring] for ring in rings]
    return area


RULE_FIELDS: dict[str, Any] = {
    "kinds": some(["cap", "sar"]),
    "events": some(EVENTS),
    "eventCodes": some(["TOR", "FFW", "CEM"]),
    "categories": some(["Met", "Safety", "Security"]),
    "senders": some(SENDERS, max_size=1),
    "statuses": some(["Actual", "Exercise", "Test"]),
    "msgTypes": some(["Alert", "Update"]),
    "minUrgency": st.sampled_from(["Immediate", "Expected", "Unknown"]),
    "minSeverity": st.sampled_from(["Extreme", "Severe", "Minor"]),
    "minCertainty": st.sampled_from(["Observed", "Possible"]),
    "keywords": some(["fire", "active shooter", "bridge", "tornado"]),
    "tlp": some(["CLEAR", "GREEN", "RED"]),
    "caveats": some(["LES", "PII"]),
    "lists": some(["L0", "L1", "L2"]),
}


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    area = draw(st.sampled_from([None, "jurisdiction", "explicit"]))
    names = draw(some(list(RULE_FIELDS), 0, 1 if area else 3))
    document = {n: draw(RULE_FIELDS[n]) for n in names}
    if area is not None:
        document["area"] = "jurisdiction" if area == "jurisdiction" else _geo_area(draw)
    return _parsed(json.dumps(document, sort_keys=True))


@cache
def _parsed(document: str) -> Rule:
    """Parsing validates against the schema, the slow part of generating examples: once each."""
    return Rule.from_json(json.loads(document))


def _jurisdiction(shape: str) -> st.SearchStrategy[tuple[list[Any], list[Ring]]]:
    codes = some(GEOCODES, 1, 2) if shape in ("codes", "both") else st.just([])
    rings = some(RINGS, 1, 1) if shape in ("rings", "both") else st.just([])
    return st.tuples(codes, rings)


@st.composite
def stakeholders(draw: st.DrawFn, sid: str | None = None) -> Stakeholder:
    geocodes, polygons = draw(
        st.sampled_from(["codes", "codes", "rings", "both", "none"]).flatmap(_jurisdiction)
    )
    return holder(
        sid or draw(st.sampled_from(STAKEHOLDER_IDS)),
        geocodes=geocodes,
        polygons=polygons,
        kind=draw(st.sampled_from(StakeholderKind)),
        clearance=draw(st.sampled_from(CLEARANCES)),
        active=draw(st.sampled_from(MOSTLY_TRUE)),
    )


@st.composite
def contacts(draw: st.DrawFn) -> Contact:
    channel = draw(st.sampled_from(Channel))
    return Contact(
        draw(st.sampled_from(CONTACT_IDS)),
        draw(st.sampled_from([*STAKEHOLDER_IDS, "s9"])),
        channel,
        f"{channel.value}-{draw(st.sampled_from('ab'))}",
        active=draw(st.sampled_from(MOSTLY_TRUE)),
    )


@st.composite
def subscriptions(draw: st.DrawFn) -> Subscription:
    return Subscription(
        draw(st.sampled_from(SUBSCRIPTION_IDS)),
        draw(st.sampled_from([*STAKEHOLDER_IDS, "s9"])),
        draw(rules()),
        tuple(draw(some(list(Channel), 1, 3))),
        ack_required=draw(st.booleans()),
        enabled=draw(st.sampled_from(MOSTLY_TRUE)),
        include_exercises=draw(st.booleans()),
    )


@st.composite
def distribution_lists(draw: st.DrawFn) -> DistributionList:
    """Lists over the stakeholders (and one unknown), nesting any list, cycles included: the
    store refuses cycles, the matcher must still agree with the reference on them."""
    list_id = draw(st.sampled_from(LIST_IDS))
    return DistributionList(
        list_id,
        f"List {list_id}",
        frozenset(draw(some([*STAKEHOLDER_IDS, "s9"], 0, 3))),
        frozenset(draw(some(LIST_IDS, 0, 2))),
    )


@st.composite
def alert_areas(draw: st.DrawFn) -> Area:
    shape = draw(st.sampled_from(["codes", "rings", "circles", "mixed"]))
    least = {name: int(shape == name) for name in ("codes", "rings", "circles")}
    return Area(
        "area",
        polygons=tuple(draw(some(RINGS, least["rings"], 2 if shape != "mixed" else 1))),
        circles=tuple(draw(some(CIRCLES, least["circles"], 1))),
        geocodes=tuple(NamedValue(n, v) for n, v in draw(some(ALERT_GEOCODES, least["codes"], 2))),
    )


@st.composite
def infos(draw: st.DrawFn) -> Info:
    areas = [draw(alert_areas()) for _ in range(draw(st.sampled_from([1, 1, 2, 0])))]
    event_codes = [("SAME", "TOR"), ("same", "ffw"), ("NWS", "CEM")]
    return Info(
        "en-US",
        tuple(draw(some(["Met", "Safety", "Security"]))),
        draw(st.sampled_from(EVENTS)),
        draw(st.sampled_from(["Immediate", "Expected", "Past", "Unknown"])),
        draw(st.sampled_from(["Extreme", "Severe", "Minor", "Unknown"])),
        draw(st.sampled_from(["Observed", "Likely", "Possible"])),
        headline=draw(st.sampled_from(TEXTS)),
        description=draw(st.sampled_from(TEXTS)),
        event_codes=tuple(NamedValue(n, v) for n, v in draw(some(event_codes, 0, 2))),
        areas=tuple(areas),
    )


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    return Alert(
        draw(st.sampled_from([Kind.CAP, Kind.SAR])),
        "A-1",
        draw(st.sampled_from(SENDERS)),
        datetime(2026, 11, 24, tzinfo=UTC),
        "2026-11-24T00:00:00Z",
        draw(st.sampled_from([Status.ACTUAL] * 3 + list(Status))),
        draw(st.sampled_from([MsgType.ALERT, MsgType.UPDATE])),
        "Public",
        Handling(
            draw(st.sampled_from([Tlp.CLEAR, Tlp.CLEAR, *Tlp])),
            tuple(draw(st.just([]) | some(["LES", "PII"], 0, 2))),
        ),
        tuple(draw(st.lists(infos(), min_size=1, max_size=2))),
    )


@dataclass
class Directory:
    """The model the matcher is checked against: plain dicts, updated alongside it."""

    stakeholders: dict[str, Stakeholder] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    lists: dict[str, DistributionList] = field(default_factory=dict)

    def brute_force(self, alert: Alert) -> MatchResult:
        return brute_force_match(
            self.stakeholders.values(),
            self.contacts.values(),
            self.subscriptions.values(),
            alert,
            self.lists.values(),
        )


@st.composite
def directories(draw: st.DrawFn) -> Directory:
    directory = Directory()
    for sid in STAKEHOLDER_IDS[: draw(st.integers(1, len(STAKEHOLDER_IDS)))]:
        directory.stakeholders[sid] = draw(stakeholders(sid))
    for cid in CONTACT_IDS[: draw(st.integers(0, len(CONTACT_IDS)))]:
        # Mostly contacts of the stakeholders present, so that targets are frequent.
        sid = draw(st.sampled_from([*directory.stakeholders, *directory.stakeholders, "s9"]))
        directory.contacts[cid] = replace(draw(contacts()), id=cid, stakeholder_id=sid)
    for uid in SUBSCRIPTION_IDS[: draw(st.integers(1, len(SUBSCRIPTION_IDS)))]:
        sid = draw(st.sampled_from([*directory.stakeholders, *directory.stakeholders, "s9"]))
        directory.subscriptions[uid] = replace(draw(subscriptions()), id=uid, stakeholder_id=sid)
    for list_id in LIST_IDS[: draw(st.integers(0, len(LIST_IDS)))]:
        directory.lists[list_id] = replace(draw(distribution_lists()), id=list_id)
    return directory


PROPERTY_SETTINGS = settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _load(directory: Directory, matcher: Matcher) -> Matcher:
    matcher.load(
        directory.stakeholders.values(),
        directory.contacts.values(),
        directory.subscriptions.values(),
        directory.lists.values(),
    )
    return matcher


@PROPERTY_SETTINGS
@given(directory=directories(), probes=st.lists(alerts(), min_size=1, max_size=3))
def test_index_equals_brute_force(directory: Directory, probes: list[Alert]) -> None:
    matcher = _load(directory, Matcher())
    for alert in probes:
        assert matcher.match(alert) == directory.brute_force(alert)


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(directory=directories(), probe=alerts())
def test_rule_selects_agrees_with_match(directory: Directory, probe: Alert) -> None:
    """What the rule editor previews: a subscription `match` used selects the alert, and a
    subscription that selects it puts its stakeholder among the targets or the withheld."""
    matcher = _load(directory, Matcher())
    result = matcher.match(probe)
    used = {i for t in result.targets for i in t.matched_subscription_ids}
    used |= {w.subscription_id for w in result.withheld}
    reached = {t.stakeholder_id for t in result.targets}
    reached |= {w.stakeholder_id for w in result.withheld}
    for subscription in directory.subscriptions.values():
        selected = matcher.rule_selects(probe, subscription)
        if subscription.id in used:
            assert selected
        if selected:
            assert subscription.stakeholder_id in reached
        if subscription.stakeholder_id not in directory.stakeholders:
            assert not selected


Update = tuple[str, Any]
UPDATES: st.SearchStrategy[Update] = st.one_of(
    st.tuples(st.just("upsert_stakeholder"), stakeholders()),
    st.tuples(st.just("remove_stakeholder"), st.sampled_from(STAKEHOLDER_IDS)),
    st.tuples(st.just("upsert_contact"), contacts()),
    st.tuples(st.just("remove_contact"), st.sampled_from(CONTACT_IDS)),
    st.tuples(st.just("upsert_subscription"), subscriptions()),
    st.tuples(st.just("remove_subscription"), st.sampled_from(SUBSCRIPTION_IDS)),
    st.tuples(st.just("upsert_list"), distribution_lists()),
    st.tuples(st.just("remove_list"), st.sampled_from(LIST_IDS)),
)


def _apply(directory: Directory, update: Update) -> None:
    operation, value = update
    kind, _, noun = operation.partition("_")
    table: dict[str, Any] = getattr(directory, noun + "s")
    if kind == "upsert":
        table[value.id] = value
    else:
        table.pop(value, None)


@PROPERTY_SETTINGS
@given(
    directory=directories(),
    updates=st.lists(UPDATES, min_size=1, max_size=12),
    probe=alerts(),
)
def test_index_equals_brute_force_after_updates(
    directory: Directory, updates: list[Update], probe: Alert
) -> None:
    matcher = _load(directory, Matcher(recent_limit=1))
    for update in updates:
        getattr(matcher, update[0])(update[1])
        _apply(directory, update)
        assert matcher.match(probe) == directory.brute_force(probe)


# ---- distribution lists ----------------------------------------------------------------------


def test_a_lists_rule_reaches_only_resolved_members() -> None:
    """s1 is in L0, which is in L1; s2 is in no list. A rule naming L1 serves s1 only, until
    s2 joins L0 (and so L1)."""
    holders = [holder("s1"), holder("s2")]
    contacts = [contact("c1", "s1"), contact("c2", "s2")]
    rule = {"lists": ["L1"], "area": "jurisdiction"}
    subscriptions = [sub("u1", "s1", rule), sub("u2", "s2", rule)]
    lists = [
        DistributionList("L0", "Desk", frozenset({"s1"})),
        DistributionList("L1", "Region", list_ids=frozenset({"L0"})),
    ]
    matcher = Matcher()
    matcher.load(holders, contacts, subscriptions, lists)
    result = matcher.match(HERE)
    assert [t.stakeholder_id for t in result.targets] == ["s1"]
    assert result == brute_force_match(holders, contacts, subscriptions, HERE, lists)
    assert matcher.lists_of("s1") == {"L0", "L1"}
    assert matcher.candidate_ids(HERE) == {"u1"}  # u2 is anchored nowhere
    matcher.upsert_list(DistributionList("L0", "Desk", frozenset({"s1", "s2"})))
    assert [t.stakeholder_id for t in matcher.match(HERE).targets] == ["s1", "s2"]
    matcher.remove_list("L1")
    assert matcher.match(HERE).targets == ()


def _closure(lists: dict[str, DistributionList]) -> dict[str, frozenset[str]]:
    """Resolution the plain way: grow every list's audience until nothing changes."""
    audience = {k: set(v.stakeholder_ids) for k, v in lists.items()}
    changed = True
    while changed:
        changed = False
        for list_id, dl in lists.items():
            for child in dl.list_ids:
                extra = audience.get(child, set()) - audience[list_id]
                if extra:
                    audience[list_id] |= extra
                    changed = True
    return {k: frozenset(v) for k, v in audience.items()}


@PROPERTY_SETTINGS
@given(st.lists(distribution_lists(), max_size=6))
def test_resolution_equals_the_plain_closure(drawn: list[DistributionList]) -> None:
    lists = {dl.id: dl for dl in drawn}
    resolved = resolve(lists)
    assert resolved == _closure(lists)
    for sid, member_of in memberships(lists).items():
        assert member_of == {k for k, v in resolved.items() if sid in v}


def test_cycle_through_names_the_path() -> None:
    children = {"A": {"B"}, "B": {"C"}}
    assert cycle_through(children, "A", "A") == ["A", "A"]
    assert cycle_through(children, "C", "A") == ["C", "A", "B", "C"]
    assert cycle_through(children, "B", "A") == ["B", "A", "B"]
    assert cycle_through(children, "A", "C") is None
    assert cycle_through(children, "D", "A") is None


def test_stakeholders_without_an_area_or_caveats_share_their_empty_parts() -> None:
    """Memory: an empty frozenset is 216 bytes, and each stakeholder's area held two and its
    clearance one (65 MB in a process holding 100,000 stakeholders)."""
    record = stakeholder_fields("N", max_tlp="GREEN")
    first, second = (stakeholder_model(record | {"id": i, "active": True}) for i in ("a", "b"))
    assert first.clearance.caveats is second.clearance.caveats
    assert GeoArea().keys is GeoArea().keys is GeoArea().parents
    matcher = Matcher()
    matcher.load([first, second], [], [], [])
    assert matcher.candidate_ids(make_alert()) == frozenset()  # no subscription: nothing
