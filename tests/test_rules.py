"""The rule language (schemas/rule.json, subscriptions/rules.py) and geocode canonicalization
(subscriptions/geocodes.py), one table per concern: each field alone, combinations, geography
edge cases, keywords, schema errors with their JSON paths, and the to_json round trip."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest

from core.alert import Alert, Area, Circle, Handling, Info, Kind, MsgType, NamedValue, Status, Tlp
from core.errors import RejectedInput
from subscriptions.geocodes import STATE_FIPS, canonical_key, keys_match
from subscriptions.model import Jurisdiction
from subscriptions.rules import (
    CERTAINTY_RANKS,
    SEVERITY_RANKS,
    URGENCY_RANKS,
    Rule,
    certainty_rank,
    rule_matches,
    severity_rank,
    urgency_rank,
)

Doc = dict[str, Any]
SQUARE = ((0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0), (0.0, 0.0))  # lat 0..1, lon 0..1
SQUARE_JSON = [list(p) for p in SQUARE]
NOWHERE = Jurisdiction()


def make_info(
    event: str = "Tornado Warning",
    *,
    categories: tuple[str, ...] = ("Met",),
    urgency: str = "Immediate",
    severity: str = "Severe",
    certainty: str = "Observed",
    headline: str | None = "Tornado warning for Example County",
    description: str | None = "A tornado was observed near the river.",
    event_codes: tuple[NamedValue, ...] = (NamedValue("SAME", "TOR"),),
    areas: tuple[Area, ...] = (),
) -> Info:
    return Info(
        language="en-US",
        categories=categories,
        event=event,
        urgency=urgency,
        severity=severity,
        certainty=certainty,
        headline=headline,
        description=description,
        event_codes=event_codes,
        areas=areas,
    )


def make_alert(
    *infos: Info,
    kind: Kind = Kind.CAP,
    sender: str = "w-nws.webmaster@noaa.gov",
    status: Status = Status.ACTUAL,
    msg_type: MsgType = MsgType.ALERT,
    tlp: Tlp = Tlp.CLEAR,
    caveats: tuple[str, ...] = (),
) -> Alert:
    return Alert(
        kind=kind,
        identifier="A-1",
        sender=sender,
        sent=datetime(2026, 11, 24, 15, tzinfo=UTC),
        sent_text="2026-11-24T15:00:00Z",
        status=status,
        msg_type=msg_type,
        scope="Public",
        handling=Handling(tlp, caveats),
        infos=infos or (make_info(),),
    )


def geo(*codes: tuple[str, str]) -> Area:
    return Area("somewhere", geocodes=tuple(NamedValue(n, v) for n, v in codes))


def at(*areas: Area) -> Alert:
    return make_alert(make_info(areas=areas))


def matches(rule: Doc, alert: Alert, jurisdiction: Jurisdiction = NOWHERE) -> bool:
    return rule_matches(Rule.from_json(rule), alert, jurisdiction)


# ---- each field alone ----------------------------------------------------------------------

FIELD_CASES: list[tuple[str, Doc, Alert, bool]] = [
    ("empty rule matches all", {}, make_alert(), True),
    ("kinds hit", {"kinds": ["sar", "cap"]}, make_alert(), True),
    ("kinds miss", {"kinds": ["bolo"]}, make_alert(), False),
    ("events case-insensitive", {"events": ["TORNADO warning"]}, make_alert(), True),
    ("events whole, not substring", {"events": ["Tornado"]}, make_alert(), False),
    (
        "events any info",
        {"events": ["Flood Warning"]},
        make_alert(make_info(), make_info("Flood Warning")),
        True,
    ),
    ("eventCodes SAME", {"eventCodes": ["tor"]}, make_alert(), True),
    ("eventCodes miss", {"eventCodes": ["FFW"]}, make_alert(), False),
    (
        "eventCodes valueName case-insensitive",
        {"eventCodes": ["TOR"]},
        make_alert(make_info(event_codes=(NamedValue("same", "tor"),))),
        True,
    ),
    (
        "eventCodes only SAME counts",
        {"eventCodes": ["TOR"]},
        make_alert(make_info(event_codes=(NamedValue("NWS", "TOR"),))),
        False,
    ),
    ("categories hit", {"categories": ["Safety", "Met"]}, make_alert(), True),
    ("categories miss", {"categories": ["Security"]}, make_alert(), False),
    ("senders case-insensitive", {"senders": ["W-NWS.Webmaster@NOAA.gov"]}, make_alert(), True),
    ("senders miss", {"senders": ["sar@fusion.example.gov"]}, make_alert(), False),
    ("statuses Actual", {"statuses": ["Actual"]}, make_alert(), True),
    ("statuses miss", {"statuses": ["Exercise"]}, make_alert(), False),
    ("statuses Exercise", {"statuses": ["Exercise"]}, make_alert(status=Status.EXERCISE), True),
    ("msgTypes hit", {"msgTypes": ["Update", "Alert"]}, make_alert(), True),
    ("msgTypes miss", {"msgTypes": ["Cancel"]}, make_alert(), False),
    ("tlp hit", {"tlp": ["AMBER"]}, make_alert(tlp=Tlp.AMBER), True),
    ("tlp is selection, exact", {"tlp": ["AMBER"]}, make_alert(tlp=Tlp.GREEN), False),
    ("caveats any-of", {"caveats": ["PII", "LES"]}, make_alert(caveats=("LES",)), True),
    ("caveats miss", {"caveats": ["PII"]}, make_alert(caveats=("LES",)), False),
    ("caveats none on alert", {"caveats": ["PII"]}, make_alert(), False),
]


@pytest.mark.parametrize(
    ("rule", "alert", "expected"), [pytest.param(*c[1:], id=c[0]) for c in FIELD_CASES]
)
def test_each_field_alone(rule: Doc, alert: Alert, expected: bool) -> None:
    assert matches(rule, alert) is expected


# ---- thresholds ----------------------------------------------------------------------------


def ranked(urgency: str, severity: str, certainty: str) -> Info:
    return make_info(urgency=urgency, severity=severity, certainty=certainty)


THRESHOLD_CASES: list[tuple[str, Doc, tuple[Info, ...], bool]] = [
    ("urgency equal", {"minUrgency": "Expected"}, (ranked("Expected", "Minor", "Likely"),), True),
    ("urgency above", {"minUrgency": "Expected"}, (ranked("Immediate", "Minor", "Likely"),), True),
    ("urgency below", {"minUrgency": "Expected"}, (ranked("Future", "Minor", "Likely"),), False),
    (
        "severity below",
        {"minSeverity": "Severe"},
        (ranked("Immediate", "Moderate", "Observed"),),
        False,
    ),
    ("severity top", {"minSeverity": "Extreme"}, (ranked("Past", "Extreme", "Unlikely"),), True),
    (
        "certainty below",
        {"minCertainty": "Likely"},
        (ranked("Immediate", "Extreme", "Possible"),),
        False,
    ),
    (
        "certainty CAP 1.0 Very Likely",
        {"minCertainty": "Likely"},
        (ranked("Past", "Minor", "Very Likely"),),
        True,
    ),
    (
        "Unknown is lowest: min Unknown",
        {"minSeverity": "Unknown"},
        (ranked("Past", "Unknown", "Unknown"),),
        True,
    ),
    (
        "Unknown below Minor",
        {"minSeverity": "Minor"},
        (ranked("Immediate", "Unknown", "Observed"),),
        False,
    ),
    (
        "all three in one block",
        {"minUrgency": "Expected", "minSeverity": "Severe", "minCertainty": "Likely"},
        (ranked("Immediate", "Extreme", "Observed"),),
        True,
    ),
    (
        "thresholds split across blocks do not combine",
        {"minUrgency": "Expected", "minSeverity": "Severe"},
        (ranked("Immediate", "Minor", "Observed"), ranked("Past", "Extreme", "Observed")),
        False,
    ),
    (
        "second block meets all",
        {"minUrgency": "Expected", "minSeverity": "Severe"},
        (ranked("Immediate", "Minor", "Observed"), ranked("Expected", "Severe", "Unknown")),
        True,
    ),
]


@pytest.mark.parametrize(
    ("rule", "infos", "expected"), [pytest.param(*c[1:], id=c[0]) for c in THRESHOLD_CASES]
)
def test_thresholds(rule: Doc, infos: tuple[Info, ...], expected: bool) -> None:
    assert matches(rule, make_alert(*infos)) is expected


@pytest.mark.parametrize(
    ("rank", "names"),
    [
        (urgency_rank, ["Unknown", "Past", "Future", "Expected", "Immediate"]),
        (severity_rank, ["Unknown", "Minor", "Moderate", "Severe", "Extreme"]),
        (certainty_rank, ["Unknown", "Unlikely", "Possible", "Likely", "Observed"]),
    ],
)
def test_rank_order(rank: Any, names: list[str]) -> None:
    assert [rank(n) for n in names] == [0, 1, 2, 3, 4]
    assert rank("nonsense") == 0
    assert rank(names[-1].lower()) == 4


def test_rank_tables_cover_the_schema_enums() -> None:
    assert set(URGENCY_RANKS) == {"Immediate", "Expected", "Future", "Past", "Unknown"}
    assert set(SEVERITY_RANKS) == {"Extreme", "Severe", "Moderate", "Minor", "Unknown"}
    assert set(CERTAINTY_RANKS) == {"Observed", "Likely", "Possible", "Unlikely", "Unknown"}


# ---- keywords ------------------------------------------------------------------------------


def decomposed(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def texts(headline: str | None, description: str | None = None) -> Alert:
    return make_alert(make_info(headline=headline, description=description))


KEYWORD_CASES: list[tuple[str, list[str], Alert, bool]] = [
    ("whole word", ["fire"], texts("Structure fire on Main St"), True),
    ("not inside a word", ["fire"], texts("Stolen firearm recovered"), False),
    ("not a prefix", ["fire"], texts("Firefighters respond"), False),
    ("case-insensitive", ["FIRE"], texts("fire reported"), True),
    ("punctuation separates", ["fire"], texts("wild-fire, spreading"), True),
    ("in description", ["bridge"], texts("Road closure", "The bridge is closed."), True),
    ("phrase", ["active shooter"], texts("ACTIVE SHOOTER at the mall"), True),
    ("phrase, extra spaces in rule", ["Active   Shooter"], texts("active shooter"), True),
    ("phrase across line break", ["active shooter"], texts("Active\nshooter reported"), True),
    ("phrase order matters", ["active shooter"], texts("shooter still active"), False),
    ("phrase words apart", ["active shooter"], texts("active armed shooter"), False),
    ("phrase not across fields", ["active shooter"], texts("Police active", "shooter seen"), False),
    ("any of", ["hazmat", "fire"], texts("fire"), True),
    ("no text", ["fire"], texts(None, None), False),
    ("digits are words", ["I-95"], texts("Crash on I 95 northbound"), True),
    ("decomposed in the text", ["evacuación"], texts(decomposed("Orden de evacuación")), True),
    ("decomposed in the rule", [decomposed("evacuación")], texts("evacuación total"), True),
    ("a decomposed accent splits no word", ["evacuacio"], texts(decomposed("evacuación")), False),
]


@pytest.mark.parametrize(
    ("keywords", "alert", "expected"), [pytest.param(*c[1:], id=c[0]) for c in KEYWORD_CASES]
)
def test_keywords(keywords: list[str], alert: Alert, expected: bool) -> None:
    assert matches({"keywords": keywords}, alert) is expected


# ---- geography -----------------------------------------------------------------------------


def poly(*rings: tuple[tuple[float, float], ...]) -> Area:
    return Area("polygon", polygons=rings)


def circle(lat: float, lon: float, radius_km: float) -> Area:
    return Area("circle", circles=(Circle(lat, lon, radius_km),))


def square(lat: float, lon: float, size: float = 1.0) -> tuple[tuple[float, float], ...]:
    return (
        (lat, lon),
        (lat, lon + size),
        (lat + size, lon + size),
        (lat + size, lon),
        (lat, lon),
    )


def codes(*pairs: tuple[str, str]) -> Doc:
    return {"area": {"geocodes": [{"valueName": n, "value": v} for n, v in pairs]}}


POLYGON_RULE: Doc = {"area": {"polygons": [SQUARE_JSON]}}
# 0.1 degree of longitude at the equator is 11.1195 km on the mean sphere.
GEO_CASES: list[tuple[str, Doc, Alert, bool]] = [
    ("overlapping polygon", POLYGON_RULE, at(poly(square(0.5, 0.5))), True),
    ("polygon inside", POLYGON_RULE, at(poly(square(0.2, 0.2, 0.1))), True),
    ("rule polygon inside alert polygon", POLYGON_RULE, at(poly(square(-1, -1, 5))), True),
    ("shared edge touches", POLYGON_RULE, at(poly(square(0.0, 1.0))), True),
    ("shared vertex touches", POLYGON_RULE, at(poly(square(1.0, 1.0))), True),
    ("disjoint polygon", POLYGON_RULE, at(poly(square(0.0, 1.0001))), False),
    (
        "bbox overlap but disjoint",
        POLYGON_RULE,
        at(poly(((0.9, 1.2), (1.2, 0.9), (1.2, 1.2), (0.9, 1.2)))),
        False,
    ),
    ("second alert polygon hits", POLYGON_RULE, at(poly(square(5, 5), square(0.5, 0.5))), True),
    ("circle reaches the edge", POLYGON_RULE, at(circle(0.5, 1.1, 11.13)), True),
    ("circle just outside", POLYGON_RULE, at(circle(0.5, 1.1, 11.10)), False),
    ("circle centre inside", POLYGON_RULE, at(circle(0.5, 0.5, 1.0)), True),
    ("point inside", POLYGON_RULE, at(circle(0.5, 0.5, 0.0)), True),
    ("point on the edge touches", POLYGON_RULE, at(circle(0.0, 0.5, 0.0)), True),
    ("point outside", POLYGON_RULE, at(circle(1.5, 0.5, 0.0)), False),
    ("circle around the polygon", POLYGON_RULE, at(circle(0.5, 0.5, 500.0)), True),
    ("no area never matches", POLYGON_RULE, make_alert(), False),
    ("description-only area", POLYGON_RULE, at(Area("Example County")), False),
    ("geocodes only vs polygon rule", POLYGON_RULE, at(geo(("SAME", "006109"))), False),
    ("SAME county = FIPS6 county", codes(("SAME", "006109")), at(geo(("FIPS6", "006109"))), True),
    ("FIPS6 5 digits", codes(("FIPS6", "06109")), at(geo(("SAME", "006109"))), True),
    (
        "SAME subdivision reaches county",
        codes(("FIPS6", "06109")),
        at(geo(("SAME", "306109"))),
        True,
    ),
    (
        "county rule, subdivision alert",
        codes(("SAME", "006109")),
        at(geo(("SAME", "906109"))),
        True,
    ),
    ("other county", codes(("SAME", "006109")), at(geo(("SAME", "006107"))), False),
    (
        "same county number, other state",
        codes(("SAME", "006109")),
        at(geo(("SAME", "032109"))),
        False,
    ),
    ("state rule covers county", codes(("SAME", "006000")), at(geo(("SAME", "006109"))), True),
    (
        "state alert reaches county rule",
        codes(("FIPS6", "06109")),
        at(geo(("FIPS6", "006000"))),
        True,
    ),
    (
        "state vs other state's county",
        codes(("SAME", "006000")),
        at(geo(("SAME", "032003"))),
        False,
    ),
    ("UGC county = SAME county", codes(("UGC", "CAC109")), at(geo(("SAME", "006109"))), True),
    ("UGC county lower case", codes(("UGC", "cac109")), at(geo(("FIPS6", "06109"))), True),
    ("UGC county vs state", codes(("UGC", "CAC109")), at(geo(("UGC", "CAC000"))), True),
    ("UGC CALL = state", codes(("UGC", "CACALL")), at(geo(("SAME", "006001"))), True),
    ("UGC territory county", codes(("UGC", "PRC127")), at(geo(("SAME", "072127"))), True),
    ("UGC zone equal", codes(("UGC", "CAZ013")), at(geo(("UGC", "CAZ013"))), True),
    ("UGC zone other", codes(("UGC", "CAZ013")), at(geo(("UGC", "CAZ014"))), False),
    (
        "UGC zone has no county mapping",
        codes(("UGC", "CAZ013")),
        at(geo(("SAME", "006013"))),
        False,
    ),
    ("UGC zone vs FIPS state", codes(("SAME", "006000")), at(geo(("UGC", "CAZ013"))), False),
    (
        "UGC zone state level covers zone",
        codes(("UGC", "CAZ000")),
        at(geo(("UGC", "CAZ013"))),
        True,
    ),
    ("UGC zone ALL covers zone", codes(("UGC", "CAZALL")), at(geo(("UGC", "CAZ013"))), True),
    (
        "UGC zone vs zone state level alert",
        codes(("UGC", "CAZ013")),
        at(geo(("UGC", "CAZALL"))),
        True,
    ),
    ("marine zone", codes(("UGC", "PZZ530")), at(geo(("UGC", "PZZ530"))), True),
    ("unknown valueName ignored", codes(("SAME", "006109")), at(geo(("ZIP", "006109"))), False),
    ("invalid value ignored", codes(("SAME", "006109")), at(geo(("SAME", "6109"))), False),
    ("unknown UGC state ignored", codes(("SAME", "006000")), at(geo(("UGC", "XXC109"))), False),
    (
        "any alert geocode",
        codes(("SAME", "006109")),
        at(geo(("SAME", "032003"), ("SAME", "006109"))),
        True,
    ),
    (
        "any area",
        codes(("SAME", "006109")),
        at(geo(("SAME", "032003")), geo(("SAME", "006109"))),
        True,
    ),
    (
        "geocode or polygon",
        {
            "area": {
                "geocodes": [{"valueName": "SAME", "value": "006109"}],
                "polygons": [SQUARE_JSON],
            }
        },
        at(poly(square(0.5, 0.5))),
        True,
    ),
]


@pytest.mark.parametrize(
    ("rule", "alert", "expected"), [pytest.param(*c[1:], id=c[0]) for c in GEO_CASES]
)
def test_geography(rule: Doc, alert: Alert, expected: bool) -> None:
    assert matches(rule, alert) is expected


JURISDICTION_CASES: list[tuple[str, Jurisdiction, Alert, bool]] = [
    (
        "geocode",
        Jurisdiction(geocodes=(NamedValue("SAME", "006109"),)),
        at(geo(("UGC", "CAC109"))),
        True,
    ),
    (
        "geocode miss",
        Jurisdiction(geocodes=(NamedValue("SAME", "006109"),)),
        at(geo(("UGC", "CAC107"))),
        False,
    ),
    ("polygon", Jurisdiction(polygons=(SQUARE,)), at(circle(0.5, 0.5, 0)), True),
    ("polygon miss", Jurisdiction(polygons=(SQUARE,)), at(circle(5, 5, 1)), False),
    ("empty jurisdiction never matches", Jurisdiction(), at(geo(("SAME", "006109"))), False),
    (
        "unclosed ring is closed",
        Jurisdiction(polygons=(SQUARE[:-1],)),
        at(circle(0.5, 0.5, 0)),
        True,
    ),
    (
        "degenerate ring ignored",
        Jurisdiction(polygons=(((0, 0), (0, 1), (0, 0)),)),
        at(circle(0, 0.5, 0)),
        False,
    ),
]


@pytest.mark.parametrize(
    ("jurisdiction", "alert", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in JURISDICTION_CASES],
)
def test_area_jurisdiction(jurisdiction: Jurisdiction, alert: Alert, expected: bool) -> None:
    assert matches({"area": "jurisdiction"}, alert, jurisdiction) is expected


def test_jurisdiction_is_ignored_without_area_jurisdiction() -> None:
    alert = at(geo(("SAME", "006109")))
    far = Jurisdiction(geocodes=(NamedValue("SAME", "032003"),))
    assert matches({}, alert, far)
    assert not matches({"area": "jurisdiction"}, alert, far)


CANONICAL_CASES: list[tuple[str, str, str | None]] = [
    ("SAME", "006109", "fips:06109"),
    ("SAME", "106109", "fips:06109"),
    ("SAME", "006000", "fips:06"),
    ("SAME", "000000", None),
    ("SAME", "06109", None),
    ("same", " 006109 ", "fips:06109"),
    ("FIPS6", "006109", "fips:06109"),
    ("FIPS6", "06109", "fips:06109"),
    ("FIPS6", "06000", "fips:06"),
    ("FIPS6", "006000", "fips:06"),
    ("FIPS6", "6109", None),
    ("UGC", "CAC109", "fips:06109"),
    ("UGC", "CAC000", "fips:06"),
    ("UGC", "CACALL", "fips:06"),
    ("UGC", "CAZ013", "ugc:CAZ013"),
    ("UGC", "caz013", "ugc:CAZ013"),
    ("UGC", "CAZ000", "ugc:CAZ"),
    ("UGC", "CAZALL", "ugc:CAZ"),
    ("UGC", "DCC001", "fips:11001"),
    ("UGC", "VIC010", "fips:78010"),
    ("UGC", "XXC001", None),
    ("UGC", "CAX013", None),
    ("UGC", "CAZ13", None),
    ("ZIP", "90210", None),
]


@pytest.mark.parametrize(("name", "value", "key"), CANONICAL_CASES)
def test_canonical_key(name: str, value: str, key: str | None) -> None:
    assert canonical_key(name, value) == key


def test_state_table_covers_states_dc_and_territories() -> None:
    assert len(STATE_FIPS) == 50 + 1 + 5
    assert len(set(STATE_FIPS.values())) == len(STATE_FIPS)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("fips:06109", "fips:06109", True),
        ("fips:06", "fips:06109", True),
        ("fips:06109", "fips:06", True),
        ("fips:06109", "fips:06107", False),
        ("fips:06", "fips:32003", False),
        ("ugc:CAZ", "ugc:CAZ013", True),
        ("ugc:CAZ013", "ugc:CAZ", True),
        ("ugc:CAZ", "ugc:CAC013", False),
        ("fips:06", "ugc:CAZ013", False),
    ],
)
def test_keys_match(a: str, b: str, expected: bool) -> None:
    assert keys_match(a, b) is expected


# ---- combinations --------------------------------------------------------------------------

FLOOD_IN_SACRAMENTO = make_alert(
    make_info(
        "Flash Flood Warning",
        severity="Severe",
        event_codes=(NamedValue("SAME", "FFW"),),
        headline="Flash flood warning: the American River bridge is closed",
        areas=(geo(("SAME", "006067")),),
    ),
    tlp=Tlp.GREEN,
    caveats=("FOUO",),
)
COMBINATION_CASES: list[tuple[str, Doc, bool]] = [
    (
        "all fields hold",
        {
            "kinds": ["cap"],
            "events": ["flash flood warning"],
            "eventCodes": ["FFW"],
            "categories": ["Met"],
            "senders": ["w-nws.webmaster@noaa.gov"],
            "statuses": ["Actual"],
            "msgTypes": ["Alert"],
            "minUrgency": "Immediate",
            "minSeverity": "Severe",
            "minCertainty": "Observed",
            "keywords": ["bridge"],
            "tlp": ["GREEN"],
            "caveats": ["FOUO"],
            **codes(("UGC", "CAC067")),
        },
        True,
    ),
    ("area fails", {"eventCodes": ["FFW"], **codes(("SAME", "006109"))}, False),
    ("event code fails, area holds", {"eventCodes": ["TOR"], **codes(("SAME", "006067"))}, False),
    ("keyword fails", {"keywords": ["shooter"], "eventCodes": ["FFW"]}, False),
    ("threshold fails", {"minSeverity": "Extreme", "events": ["Flash Flood Warning"]}, False),
    ("tlp fails", {"tlp": ["CLEAR"], "categories": ["Met"]}, False),
    ("kind fails", {"kinds": ["sar"], "keywords": ["bridge"]}, False),
    (
        "lists are any-of, fields all-of",
        {
            "events": ["Tornado Warning", "Flash Flood Warning"],
            "categories": ["Fire", "Met"],
            "keywords": ["shooter", "river bridge"],
        },
        True,
    ),
]


@pytest.mark.parametrize(
    ("rule", "expected"), [pytest.param(*c[1:], id=c[0]) for c in COMBINATION_CASES]
)
def test_combinations(rule: Doc, expected: bool) -> None:
    assert matches(rule, FLOOD_IN_SACRAMENTO) is expected


# ---- schema errors -------------------------------------------------------------------------

BOWTIE = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]
ERROR_CASES: list[tuple[str, Any, str, str]] = [
    ("not an object", ["kinds"], "$", "is not of type 'object'"),
    ("unknown field", {"kinds": ["cap"], "region": "west"}, "$", "'region' was unexpected"),
    ("bad kind", {"kinds": ["cap", "memo"]}, "$.kinds[1]", "'memo' is not one of"),
    ("empty list", {"kinds": []}, "$.kinds", "should be non-empty"),
    ("Draft not selectable", {"statuses": ["Draft"]}, "$.statuses[0]", "'Draft' is not one of"),
    ("bad msgType", {"msgTypes": ["Ack"]}, "$.msgTypes[0]", "'Ack' is not one of"),
    ("bad urgency", {"minUrgency": "Soon"}, "$.minUrgency", "'Soon' is not one of"),
    ("bad category", {"categories": ["Weather"]}, "$.categories[0]", "'Weather' is not one of"),
    ("bad tlp", {"tlp": ["WHITE"]}, "$.tlp[0]", "'WHITE' is not one of"),
    ("lower-case caveat", {"caveats": ["les"]}, "$.caveats[0]", "does not match"),
    ("bad event code", {"eventCodes": ["TORN"]}, "$.eventCodes[0]", "does not match"),
    ("keyword without a word", {"keywords": ["!!!"]}, "$.keywords[0]", "does not match"),
    ("bad area string", {"area": "county"}, "$.area", "'jurisdiction' was expected"),
    ("empty area", {"area": {}}, "$.area", "should be non-empty"),
    ("unknown area field", {"area": {"zip": ["90210"]}}, "$.area", "'zip' was unexpected"),
    (
        "bad geocode system",
        codes(("ZIP", "90210")),
        "$.area.geocodes[0].valueName",
        "'ZIP' is not one of",
    ),
    ("bad SAME", codes(("SAME", "6109")), "$.area.geocodes[0].value", "does not match"),
    ("bad FIPS6", codes(("FIPS6", "6109")), "$.area.geocodes[0].value", "does not match"),
    ("bad UGC", codes(("UGC", "CA109")), "$.area.geocodes[0].value", "does not match"),
    (
        "UGC unknown state",
        codes(("SAME", "006109"), ("UGC", "XXC109")),
        "$.area.geocodes[1].value",
        "not a UGC code",
    ),
    (
        "SAME whole country",
        codes(("SAME", "000000")),
        "$.area.geocodes[0].value",
        "not a SAME code",
    ),
    (
        "ring too short",
        {"area": {"polygons": [[[0, 0], [0, 1], [0, 0]]]}},
        "$.area.polygons[0]",
        "is too short",
    ),
    (
        "ring latitude out of range",
        {"area": {"polygons": [[[0, 0], [95, 1], [1, 1], [0, 0]]]}},
        "$.area.polygons[0][1][0]",
        "greater than the maximum",
    ),
    (
        "ring point not a pair",
        {"area": {"polygons": [[[0, 0], [1], [1, 1], [0, 0]]]}},
        "$.area.polygons[0][1]",
        "is too short",
    ),
    (
        "ring of distinct points",
        {"area": {"polygons": [[[0, 0], [0, 1], [1, 1], [1, 0]]]}},
        "$.area.polygons[0]",
        "should not be valid",
    ),
    (
        "ring not closed",
        {"area": {"polygons": [SQUARE_JSON, [[0, 0], [0, 1], [0, 0], [1, 1]]]}},
        "$.area.polygons[1]",
        "ring not closed",
    ),
    (
        "ring self-intersects",
        {"area": {"polygons": [BOWTIE]}},
        "$.area.polygons[0]",
        "not a simple ring",
    ),
]


@pytest.mark.parametrize(
    ("document", "path", "message"), [pytest.param(*c[1:], id=c[0]) for c in ERROR_CASES]
)
def test_schema_errors_name_the_path(document: Any, path: str, message: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        Rule.from_json(document)
    assert caught.value.reason == "schema_violation"
    found = [(e.path, e.message) for e in caught.value.errors]
    assert any(p == path and message in m for p, m in found), found


# ---- round trip ----------------------------------------------------------------------------

ROUND_TRIP_CASES: list[Doc] = [
    {},
    {"area": "jurisdiction", "minSeverity": "Severe"},
    COMBINATION_CASES[0][1],
    {"keywords": ["Active  Shooter", "fire"], "events": ["Tornado Warning"], "senders": ["A@B"]},
    {"statuses": ["Test", "Actual", "Exercise", "System"], "msgTypes": ["Cancel", "Alert"]},
    {"tlp": ["RED", "CLEAR", "AMBER+STRICT"], "caveats": ["PII", "LES"], "minUrgency": "Unknown"},
    {
        "area": {
            "geocodes": [
                {"valueName": "UGC", "value": "caz013"},
                {"valueName": "SAME", "value": "006109"},
                {"valueName": "SAME", "value": "006109"},
            ],
            "polygons": [SQUARE_JSON, [[10, 10], [10.5, 11], [11, 10], [10, 10]]],
        },
        "kinds": ["sar", "bolo"],
    },
    {"lists": ["b-list", "a-list"], "minSeverity": "Severe"},
]


@pytest.mark.parametrize("document", ROUND_TRIP_CASES)
def test_round_trip(document: Doc) -> None:
    rule = Rule.from_json(document)
    canonical = rule.to_json()
    assert Rule.from_json(json.loads(json.dumps(canonical))) == rule
    assert Rule.from_json(canonical).to_json() == canonical


def test_canonical_form() -> None:
    rule = Rule.from_json(ROUND_TRIP_CASES[6] | {"keywords": ["Active  Shooter"]})
    assert rule.to_json() == {
        "kinds": ["bolo", "sar"],
        "area": {
            "geocodes": [
                {"valueName": "SAME", "value": "006109"},
                {"valueName": "UGC", "value": "CAZ013"},
            ],
            "polygons": [SQUARE_JSON, [[10, 10], [10.5, 11], [11, 10], [10, 10]]],
        },
        "keywords": ["active shooter"],
    }


def test_lists_restrict_the_audience_not_the_alerts() -> None:
    """A `lists` rule holds for a stakeholder that resolves into one of the lists, whatever
    the alert; every other field still has to hold too."""
    alert = make_alert()
    rule = Rule.from_json({"lists": ["L1", "L2"]})
    here = NOWHERE
    assert rule_matches(rule, alert, here, frozenset({"L2", "L9"}))
    assert not rule_matches(rule, alert, here, frozenset({"L9"}))
    assert not rule_matches(rule, alert, here)
    both = Rule.from_json({"lists": ["L1"], "kinds": ["sar"]})
    assert not rule_matches(both, alert, here, frozenset({"L1"}))
    assert rule.to_json() == {"lists": ["L1", "L2"]}
