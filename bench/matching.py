"""Matching benchmark: per-alert latency of the indexed `Matcher` against `brute_force_match`.

    .venv/bin/python -m bench.matching [--sizes 1000,10000,100000] [--alerts 200]
                                       [--brute-seconds 60] [--timeout 900] [--seed 7]

For each size N it builds a synthetic but realistic directory of N subscriptions: about N/2
stakeholders whose jurisdictions are counties of a 52-state x 60-county grid (spelled as SAME,
FIPS6 or UGC), some multi-county, state-wide, zone and polygon jurisdictions; rules with
severity thresholds, SAME event codes, categories, keywords, explicit geocode or polygon areas,
and a few area-less national rules. Every rule is parsed from JSON. Alerts: 80 % NWS-like
warnings over 1-4 neighbouring counties (SAME and UGC zone geocodes and a storm polygon), 20 %
SAR/BOLO at a point; 5 state-wide alerts are measured apart (they match ~1 % of everything).

Reported per size: index build time; match latency p50/p99/max over every call (each alert 3
times after a warm-up), on the wall clock and on the thread's CPU clock (the difference is
time spent waiting for a core on a busy machine), overall and by number of subscriptions
matched; brute force in the same run (on a sample once it gets slow: the output says so) and
whether it returns exactly what the index returns; candidates, matches, targets and withheld
entries per alert. At the largest size also RSS (VmRSS) before and after building the index,
and the cost of incremental updates, followed by an index == brute force check. Results go to
bench/results/matching.json. Brute force is bounded by --brute-seconds per size and the whole
run by --timeout.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.common import write_results
from core.alert import Alert, Area, Circle, Handling, Info, Kind, MsgType, NamedValue, Status, Tlp
from subscriptions.geocodes import STATE_FIPS
from subscriptions.matcher import Matcher, MatchResult, brute_force_match
from subscriptions.model import (
    Channel,
    Clearance,
    Contact,
    Jurisdiction,
    Sector,
    Stakeholder,
    StakeholderKind,
    Subscription,
)
from subscriptions.rules import Rule

STATES = sorted(STATE_FIPS.items())[:52]  # USPS code, FIPS code
COUNTIES = 60  # per state: FIPS county codes 001, 003, ... 119 on a 6 x 10 grid
CELL_LAT, CELL_LON = 0.4, 0.6
EVENTS = [  # event, SAME code, category, urgency, severity, certainty
    ("Tornado Warning", "TOR", "Met", "Immediate", "Extreme", "Observed"),
    ("Severe Thunderstorm Warning", "SVR", "Met", "Immediate", "Severe", "Observed"),
    ("Flash Flood Warning", "FFW", "Met", "Immediate", "Severe", "Likely"),
    ("Winter Storm Warning", "WSW", "Met", "Expected", "Severe", "Likely"),
    ("Flood Advisory", "FLS", "Met", "Expected", "Minor", "Likely"),
    ("Special Weather Statement", "SPS", "Met", "Expected", "Moderate", "Observed"),
    ("Civil Emergency Message", "CEM", "Safety", "Immediate", "Extreme", "Likely"),
    ("Hazardous Materials Warning", "HMW", "CBRNE", "Immediate", "Severe", "Observed"),
]
WORDS = ["bridge", "interstate", "hospital", "school", "shelter", "power", "river", "dam"]
PHRASES = ["active shooter", "hazmat", "bomb threat", "missing child", "wildfire", "bridge"]
CODES = [e[1] for e in EVENTS]


@dataclass(frozen=True, slots=True)
class World:
    stakeholders: list[Stakeholder]
    contacts: list[Contact]
    subscriptions: list[Subscription]


def county_cell(state: int, county: int) -> tuple[float, float]:
    """South-west corner (lat, lon) of a county's grid cell."""
    lat = 20.0 + (state // 8) * 6 * CELL_LAT * 1.25 + (county // 10) * CELL_LAT
    lon = -125.0 + (state % 8) * 10 * CELL_LON * 1.25 + (county % 10) * CELL_LON
    return lat, lon


def rect(lat: float, lon: float, dlat: float, dlon: float) -> tuple[tuple[float, float], ...]:
    return ((lat, lon), (lat, lon + dlon), (lat + dlat, lon + dlon), (lat + dlat, lon), (lat, lon))


def county_code(rng: random.Random, state: int, county: int) -> NamedValue:
    usps, fips = STATES[state]
    number = f"{2 * county + 1:03d}"
    spelling = rng.random()
    if spelling < 0.5:
        return NamedValue("SAME", f"0{fips}{number}")
    if spelling < 0.8:
        return NamedValue("FIPS6", f"{fips}{number}")
    return NamedValue("UGC", f"{usps}C{number}")


def jurisdiction(rng: random.Random) -> Jurisdiction:
    state, county = rng.randrange(len(STATES)), rng.randrange(COUNTIES)
    shape = rng.random()
    if shape < 0.72:
        return Jurisdiction((county_code(rng, state, county),))
    if shape < 0.87:
        near = {min(COUNTIES - 1, county + d) for d in (0, 1, 10, 11)[: rng.randint(2, 4)]}
        return Jurisdiction(tuple(county_code(rng, state, c) for c in sorted(near)))
    if shape < 0.89:
        return Jurisdiction((NamedValue("SAME", f"0{STATES[state][1]}000"),))
    if shape < 0.95:
        usps = STATES[state][0]
        return Jurisdiction((NamedValue("UGC", f"{usps}Z{2 * county + 1:03d}"),))
    lat, lon = county_cell(state, county)
    size = rng.uniform(0.1, 0.5)
    return Jurisdiction(polygons=(rect(lat + 0.05, lon + 0.05, size, size * 1.3),))


def rule_document(rng: random.Random, holder: Stakeholder) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.45:
        return {"area": "jurisdiction", "minSeverity": rng.choice(["Severe", "Moderate", "Minor"])}
    if kind < 0.60:
        return {"area": "jurisdiction", "eventCodes": rng.sample(CODES, rng.randint(2, 5))}
    if kind < 0.70:
        return {"area": "jurisdiction", "categories": ["Met", "Safety"], "minCertainty": "Likely"}
    if kind < 0.78:
        state, county = rng.randrange(len(STATES)), rng.randrange(COUNTIES)
        codes = [county_code(rng, state, (county + i) % COUNTIES) for i in range(rng.randint(1, 5))]
        area = {"geocodes": [{"valueName": c.name, "value": c.value} for c in codes]}
        return {"area": area, "minUrgency": "Expected", "minSeverity": "Moderate"}
    if kind < 0.83:
        lat, lon = county_cell(rng.randrange(len(STATES)), rng.randrange(COUNTIES))
        ring = [list(p) for p in rect(lat, lon, rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))]
        return {"area": {"polygons": [ring]}, "events": [e[0] for e in rng.sample(EVENTS, 3)]}
    if kind < 0.92:
        return {"area": "jurisdiction", "keywords": rng.sample(WORDS + PHRASES, 2)}
    if kind < 0.998:
        return {"area": "jurisdiction", "kinds": ["sar", "bolo"], "tlp": ["GREEN", "AMBER"]}
    if kind < 0.999:
        return {"keywords": [rng.choice(PHRASES)], "kinds": ["sar"]}  # national analysts
    return {"eventCodes": ["CEM", "HMW"], "minSeverity": "Extreme"}


def stakeholder(rng: random.Random, sid: str) -> Stakeholder:
    group = rng.random() < 0.15
    caveats = frozenset(rng.sample(["LES", "PII"], rng.randint(0, 2)))
    return Stakeholder(
        id=sid,
        name=f"Stakeholder {sid}",
        organization="Agency",
        sector=rng.choice(list(Sector)),
        kind=StakeholderKind.GROUP if group else StakeholderKind.INDIVIDUAL,
        jurisdiction=jurisdiction(rng),
        clearance=Clearance(rng.choice(list(Tlp)), caveats, rng.random() < 0.4),
        active=rng.random() < 0.97,
    )


def build_world(size: int, rng: random.Random) -> World:
    """About two subscriptions per stakeholder; every rule parsed from its JSON (no sharing)."""
    holders: list[Stakeholder] = []
    contacts: list[Contact] = []
    subscriptions: list[Subscription] = []
    while len(subscriptions) < size:
        holder = stakeholder(rng, f"s{len(holders):06d}")
        sid = holder.id
        holders.append(holder)
        contacts.append(Contact(f"{sid}-e", sid, Channel.EMAIL, f"{sid}@example.gov"))
        if rng.random() < 0.5:
            contacts.append(Contact(f"{sid}-s", sid, Channel.SMS, f"+1555{len(holders):07d}"))
        if holder.kind is StakeholderKind.GROUP and rng.random() < 0.5:
            contacts.append(Contact(f"{sid}-w", sid, Channel.WEBHOOK, f"https://{sid}.example/h"))
        for i in range(rng.randint(1, 3)):
            channels = rng.choice([(Channel.EMAIL,), (Channel.SMS, Channel.EMAIL)])
            rule = Rule.from_json(rule_document(rng, holder))
            subscriptions.append(
                Subscription(f"{sid}-{i}", sid, rule, channels, ack_required=rng.random() < 0.2)
            )
    return World(holders, contacts, subscriptions[:size])


def _local_alert(rng: random.Random, state: int, county: int) -> tuple[Kind, Info, Handling]:
    """A SAR or BOLO at a point (a circle of 0-3 km) in one county."""
    lat, lon = county_cell(state, county)
    point = Circle(
        lat + rng.uniform(0, CELL_LAT), lon + rng.uniform(0, CELL_LON), rng.uniform(0, 3)
    )
    same = NamedValue("SAME", f"0{STATES[state][1]}{2 * county + 1:03d}")
    text = f"Suspicious activity near the {' '.join(rng.sample(WORDS, 3))}; "
    info = Info(
        "en-US", ("Security",), "Suspicious Activity", "Expected", "Moderate", "Possible",
        headline="Suspicious activity", description=text + f"{rng.choice(PHRASES)} reported",
        areas=(Area("location", circles=(point,), geocodes=(same,)),),
    )  # fmt: skip
    handling = Handling(rng.choice([Tlp.GREEN, Tlp.AMBER]), rng.choice([(), ("LES",)]))
    return rng.choice([Kind.SAR, Kind.BOLO]), info, handling


def _warning(rng: random.Random, state: int, counties: list[int], statewide: bool) -> Info:
    """An NWS-like warning: SAME county codes, UGC zones and a storm polygon, or a whole state."""
    usps, fips = STATES[state]
    event, code, category, urgency, severity, certainty = rng.choice(EVENTS)
    if statewide:
        area = Area(f"All of {usps}", geocodes=(NamedValue("SAME", f"0{fips}000"),))
    else:
        same = [NamedValue("SAME", f"0{fips}{2 * c + 1:03d}") for c in counties]
        zones = [NamedValue("UGC", f"{usps}Z{2 * c + 1:03d}") for c in counties]
        lat, lon = county_cell(state, counties[0])
        storm = rect(lat + 0.1, lon + 0.1, CELL_LAT * 1.2, CELL_LON * 1.2)
        area = Area("counties", polygons=(storm,), geocodes=tuple(same + zones))
    return Info(
        "en-US", (category,), event, urgency, severity, certainty,
        headline=f"{event} for {usps}",
        description=f"{event} near the {' '.join(rng.sample(WORDS, 3))}",
        event_codes=(NamedValue("SAME", code),), areas=(area,),
    )  # fmt: skip


def make_alert(rng: random.Random, number: int, statewide: bool = False) -> Alert:
    """80 % warnings over 1-4 neighbouring counties, 20 % local SAR/BOLO alerts."""
    state = rng.randrange(len(STATES))
    first = rng.randrange(COUNTIES - 12)
    counties = sorted({first + rng.choice((0, 1, 10, 11)) for _ in range(rng.randint(1, 4))})
    if not statewide and rng.random() < 0.2:
        kind, info, handling = _local_alert(rng, state, counties[0])
        sender = "sar-intake@fusion.example.gov"
    else:
        kind, info, handling = (
            Kind.CAP,
            _warning(rng, state, counties, statewide),
            Handling(Tlp.CLEAR),
        )
        sender = "w-nws.webmaster@noaa.gov"
    sent = datetime(2026, 11, 24, tzinfo=UTC)
    return Alert(
        kind, f"bench-{number}", sender, sent, sent.isoformat(), Status.ACTUAL, MsgType.ALERT,
        "Public", handling, (info,),
    )  # fmt: skip


def rss_mib() -> float | None:
    """Resident set size of this process from /proc/self/status, in MiB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentiles(samples_ns: list[int]) -> dict[str, Any]:
    if not samples_ns:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None, "n": 0}
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": ordered[-1] / 1e6, "n": len(ordered)}


def matched_subscriptions(result: MatchResult) -> int:
    ids = {i for t in result.targets for i in t.matched_subscription_ids}
    return len(ids | {w.subscription_id for w in result.withheld})


BUCKETS = ((0, 50), (51, 150), (151, 100_000))


def measure_index(matcher: Matcher, alerts: list[Alert], repeats: int = 3) -> dict[str, Any]:
    """Each alert matched `repeats` times after a warm-up pass; every call is a sample, timed
    on the wall clock and on this thread's CPU clock (which leaves out time the process waited
    for a core: on a shared machine the two differ)."""
    for alert in alerts:
        matcher.match(alert)
    samples: list[int] = []
    cpu_samples: list[int] = []
    by_bucket: dict[str, list[int]] = {f"{lo}-{hi}": [] for lo, hi in BUCKETS}
    cpu_by_bucket: dict[str, list[int]] = {f"{lo}-{hi}": [] for lo, hi in BUCKETS}
    counts: dict[str, list[int]] = {
        "candidates": [],
        "subscriptions": [],
        "targets": [],
        "withheld": [],
    }
    for alert in alerts:
        for _ in range(repeats):
            start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
            result = matcher.match(alert)
            samples.append(time.perf_counter_ns() - start)
            cpu_samples.append(time.thread_time_ns() - cpu_start)
        matched = matched_subscriptions(result)
        bucket = next(f"{lo}-{hi}" for lo, hi in BUCKETS if lo <= matched <= hi)
        by_bucket[bucket].extend(samples[-repeats:])
        cpu_by_bucket[bucket].extend(cpu_samples[-repeats:])
        counts["candidates"].append(len(matcher.candidate_ids(alert)))
        counts["subscriptions"].append(matched)
        counts["targets"].append(len(result.targets))
        counts["withheld"].append(len(result.withheld))
    per_alert = {k: {"mean": statistics.fmean(v), "max": max(v)} for k, v in counts.items()}
    buckets = {
        k: percentiles(v) | {"cpu": percentiles(cpu_by_bucket[k])}
        for k, v in by_bucket.items()
        if v
    }
    return percentiles(samples) | {
        "cpu": percentiles(cpu_samples),
        "per_alert": per_alert,
        "by_matched_subscriptions": buckets,
    }


def measure_brute(
    world: World, matcher: Matcher, alerts: list[Alert], budget_s: float
) -> dict[str, Any]:
    """Brute force on as many alerts as fit in the budget (at least 5), one call each, and
    whether each result equals the index's."""
    brute_force_match(world.stakeholders, world.contacts, world.subscriptions, alerts[0])  # warm
    samples: list[int] = []
    mismatches = 0
    stop = time.monotonic() + budget_s
    for alert in alerts:
        if time.monotonic() > stop and len(samples) >= 5:
            break
        start = time.perf_counter_ns()
        result = brute_force_match(world.stakeholders, world.contacts, world.subscriptions, alert)
        samples.append(time.perf_counter_ns() - start)
        mismatches += result != matcher.match(alert)
    sampled = len(samples) < len(alerts)
    return percentiles(samples) | {"sampled": sampled, "mismatches_vs_index": mismatches}


T = TypeVar("T")


def _each(apply: Callable[[T], None], items: list[T]) -> dict[str, float]:
    times = []
    for item in items:
        start = time.perf_counter_ns()
        apply(item)
        times.append(time.perf_counter_ns() - start)
    return {"n": len(times), "mean_us": statistics.fmean(times) / 1e3, "max_us": max(times) / 1e3}


@dataclass(slots=True)
class Mirror:
    """The directory as plain dicts, updated alongside the matcher, for the final check."""

    stakeholders: dict[str, Stakeholder]
    contacts: dict[str, Contact]
    subscriptions: dict[str, Subscription]

    def upsert(self, value: Stakeholder | Contact | Subscription) -> None:
        if isinstance(value, Stakeholder):
            self.stakeholders[value.id] = value
        elif isinstance(value, Contact):
            self.contacts[value.id] = value
        else:
            self.subscriptions[value.id] = value


def measure_updates(matcher: Matcher, world: World, rng: random.Random) -> dict[str, Any]:
    """Mean and max microseconds per incremental update on the loaded matcher, then whether
    the matcher still equals brute force on the updated directory."""
    mirror = Mirror(
        {h.id: h for h in world.stakeholders},
        {c.id: c for c in world.contacts},
        {s.id: s for s in world.subscriptions},
    )

    def upsert_subscription(sub: Subscription) -> None:
        matcher.upsert_subscription(sub)
        mirror.upsert(sub)

    def remove_subscription(sub: Subscription) -> None:
        matcher.remove_subscription(sub.id)
        del mirror.subscriptions[sub.id]

    def upsert_stakeholder(holder: Stakeholder) -> None:
        matcher.upsert_stakeholder(holder)
        mirror.upsert(holder)

    def upsert_contact(contact: Contact) -> None:
        matcher.upsert_contact(contact)
        mirror.upsert(contact)

    picks = rng.sample(world.subscriptions, min(1000, len(world.subscriptions)))
    added = [replace(s, id=f"new-{i}") for i, s in enumerate(picks)]
    tornado = Rule.from_json({"area": "jurisdiction", "eventCodes": ["TOR"]})
    changed = [replace(s, rule=tornado) for s in added]
    moved = [
        replace(mirror.stakeholders[s.stakeholder_id], jurisdiction=jurisdiction(rng))
        for s in picks
    ]
    ring = [[40.0, -100.0], [40.0, -99.5], [40.4, -99.5], [40.0, -100.0]]
    polygon_rule = Rule.from_json({"area": {"polygons": [ring]}})
    polygons = [replace(s, id=f"poly-{i}", rule=polygon_rule) for i, s in enumerate(picks)]
    contacts = [
        Contact(f"{s.stakeholder_id}-x", s.stakeholder_id, Channel.SMS, "+15550000") for s in picks
    ]
    results: dict[str, Any] = {
        "add_subscription": _each(upsert_subscription, added),
        "change_rule": _each(upsert_subscription, changed),
        "remove_subscription": _each(remove_subscription, changed),
        "change_jurisdiction": _each(upsert_stakeholder, moved),
        "add_polygon_subscription": _each(upsert_subscription, polygons),
        "remove_polygon_subscription": _each(remove_subscription, polygons[::2]),
        "add_contact": _each(upsert_contact, contacts),
    }
    probes = [make_alert(rng, 10_000 + i) for i in range(3)]
    results["index_equals_brute_force_after_updates"] = all(
        matcher.match(alert)
        == brute_force_match(
            mirror.stakeholders.values(),
            mirror.contacts.values(),
            mirror.subscriptions.values(),
            alert,
        )
        for alert in probes
    )
    return results


def bench_size(
    size: int, args: argparse.Namespace, deadline: float, largest: bool
) -> dict[str, Any]:
    rng = random.Random(args.seed * 1_000_003 + size)
    started = time.perf_counter()
    world = build_world(size, rng)
    generated = time.perf_counter() - started
    alerts = [make_alert(rng, i) for i in range(args.alerts)]
    statewide = [make_alert(rng, args.alerts + i, statewide=True) for i in range(5)]
    rss_before = rss_mib()
    started = time.perf_counter()
    matcher = Matcher()
    matcher.load(world.stakeholders, world.contacts, world.subscriptions)
    build_s = time.perf_counter() - started
    rss_after = rss_mib()
    report: dict[str, Any] = {
        "subscriptions": len(world.subscriptions), "stakeholders": len(world.stakeholders),
        "contacts": len(world.contacts), "generate_s": round(generated, 2),
        "index_build_s": round(build_s, 3), "rss_mib_before_index": rss_before,
        "rss_mib_after_index": rss_after,
    }  # fmt: skip
    report["index"] = measure_index(matcher, alerts)
    report["statewide_index"] = measure_index(matcher, statewide)
    budget = max(5.0, min(args.brute_seconds, deadline - time.monotonic() - 30))
    report["brute_force"] = measure_brute(world, matcher, alerts, budget)
    if largest:
        report["updates"] = measure_updates(matcher, world, rng)
    report["load_average_after"] = list(os.getloadavg())
    return report


def _ms(value: float | None) -> str:
    return "      -" if value is None else f"{value:7.3f}"


def print_report(size: int, r: dict[str, Any]) -> None:
    ix, bf, sw = r["index"], r["brute_force"], r["statewide_index"]
    per, cpu = ix["per_alert"], ix["cpu"]
    lines = [
        f"\n== {size:,} subscriptions, {r['stakeholders']:,} stakeholders",
        f"   index build {r['index_build_s']:.3f} s, RSS {r['rss_mib_before_index']:.0f} MiB"
        f" before, {r['rss_mib_after_index']:.0f} MiB after",
        "                                      p50 ms   p99 ms   max ms  calls",
        f"   index                            {_ms(ix['p50_ms'])}  {_ms(ix['p99_ms'])}"
        f"  {_ms(ix['max_ms'])}  {ix['n']}",
        f"   index, thread CPU time           {_ms(cpu['p50_ms'])}  {_ms(cpu['p99_ms'])}"
        f"  {_ms(cpu['max_ms'])}  {cpu['n']}",
    ]
    for bucket, p in ix["by_matched_subscriptions"].items():
        lines.append(
            f"     matching {bucket:>10} subs, wall {_ms(p['p50_ms'])}  {_ms(p['p99_ms'])}"
            f"  {_ms(p['max_ms'])}  {p['n']}"
        )
        lines.append(
            f"     matching {bucket:>10} subs, CPU  {_ms(p['cpu']['p50_ms'])}"
            f"  {_ms(p['cpu']['p99_ms'])}  {_ms(p['cpu']['max_ms'])}  {p['n']}"
        )
    sampled = " (a sample: brute force is slow)" if bf["sampled"] else ""
    lines += [
        f"   brute force                      {_ms(bf['p50_ms'])}  {_ms(bf['p99_ms'])}"
        f"  {_ms(bf['max_ms'])}  {bf['n']}{sampled}",
        f"   state-wide alerts, index         {_ms(sw['p50_ms'])}  {_ms(sw['p99_ms'])}"
        f"  {_ms(sw['max_ms'])}  {sw['n']}"
        f"  ({sw['per_alert']['subscriptions']['mean']:.0f} subscriptions matched)",
        f"   brute force results differing from the index: {bf['mismatches_vs_index']}",
        f"   per alert (mean/max): candidates {per['candidates']['mean']:.0f}/"
        f"{per['candidates']['max']}, subscriptions matched {per['subscriptions']['mean']:.0f}/"
        f"{per['subscriptions']['max']}, targets {per['targets']['mean']:.0f}/"
        f"{per['targets']['max']}, withheld {per['withheld']['mean']:.0f}/"
        f"{per['withheld']['max']}",
    ]
    for name, u in r.get("updates", {}).items():
        if isinstance(u, dict):
            lines.append(
                f"   update {name:28s} mean {u['mean_us']:7.1f} us  max {u['max_us']:8.1f} us"
            )
        else:
            lines.append(f"   {name}: {u}")
    lines.append("   load average after: " + ", ".join(f"{v:.2f}" for v in r["load_average_after"]))
    print("\n".join(lines))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--brute-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=7)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    deadline = time.monotonic() + args.timeout
    document: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(), "cores": os.cpu_count(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "sizes": {},
    }  # fmt: skip
    for size in sizes:
        if time.monotonic() > deadline:
            print(f"timeout: size {size} skipped", file=sys.stderr)
            break
        report = bench_size(size, args, deadline, largest=size == max(sizes))
        document["sizes"][str(size)] = report
        print_report(size, report)
    write_results("matching", document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
