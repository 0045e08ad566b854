"""Fuzzing every parser of untrusted input: whatever arrives, each raises nothing but its typed
refusal, and what it accepts can be stored and planned.

Targets, each fed inputs mutated from our own fixtures (tests/fixtures) and inputs generated
from structured strategies (date-times at the ends of the calendar and of the offsets, huge
and tiny numbers, NUL, lone surrogates, XML constructs, encodings):

- alert decoding (`decode_alerts`: CAP XML, CAP-JSON, NWS GeoJSON, the local kinds), with
  validation and the normalizers behind it: RejectedInput with a documented reason, or alerts
  that serialize to strict JSON without NUL, whose every time has a UTC equivalent, and that
  the planner and the approval rules take;
- `json_body` (every JSON endpoint) and the ack body with its token: ApiError 4xx;
- the admin bodies through their validators (stakeholder, contact, subscription, escalation,
  approval, rejection, release, review): RejectedInput or ApiError 4xx;
- the form parser of the Twilio hooks and the ack page (`form_fields`), then what the hooks
  read from a form: ApiError 400, or a form those accept.

The suite runs FUZZ_EXAMPLES examples per test (default 300; the whole file takes about
20 s on two cores), the same ones on every run. A release run draws new ones each time:

    FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py -p no:cacheprovider

(add --hypothesis-seed=N to repeat a run, --hypothesis-show-statistics to see how many
inputs each test had accepted and refused, by reason). A failure prints the smallest input
it found.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import string
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, TypeVar, cast
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from channels.smsinbound import ack_reply, opt_keyword, status_update, valid_twilio_signature
from core.alert import Alert, Tlp
from core.errors import MAX_DETAIL_CHARS, ErrorDetail, RejectedInput
from dissemination.acks.tokens import AckSigner
from dissemination.api.app import RUNTIME, Runtime
from dissemination.api.controls import decision_reason, release_request, review_note
from dissemination.api.errors import ApiError
from dissemination.api.requests import form_fields, json_body, validated
from dissemination.controls.approvalrules import ApprovalPolicy
from dissemination.errors import TokenRefused
from dissemination.intake.decoding import DecodeLimits, decode_alerts
from dissemination.intake.normalize import HandlingDefaults
from dissemination.intake.pipeline import initial_state
from dissemination.ledger.planning import Planner
from subscriptions.codec import (
    contact_model,
    stakeholder_model,
    subscription_model,
    validate_contact,
    validate_escalation,
    validate_stakeholder,
    validate_subscription,
)
from subscriptions.matcher import Matcher
from testbed.alerts import cap_json
from tests.alerts import fixture_document
from tests.samples import FIXTURES_DIR

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = DecodeLimits(max_bytes=1_048_576, max_depth=32)
DEFAULTS = HandlingDefaults(Tlp.AMBER_STRICT, Tlp.CLEAR)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
INTAKE_REASONS = frozenset(
    {
        "body_too_large",
        "unsupported_content_type",
        "unrecognized_format",
        "invalid_utf8",
        "invalid_unicode",
        "invalid_json",
        "duplicate_key",
        "non_finite_number",
        "number_out_of_range",
        "nul_character",
        "nesting_too_deep",
        "invalid_xml",
        "xml_forbidden_construct",
        "not_cap",
        "unsupported_cap_version",
        "invalid_nws_geojson",
        "unknown_kind",
        "schema_violation",
        "invalid_handling",
        "invalid_field",
    }
)
ADMIN_REASONS = frozenset({"schema_violation", "invalid_field", "forbidden_destination"})
CONTENT_TYPES = [None, "", "application/json", "application/geo+json", "application/cap+xml"]
XML_CONTENT_TYPES = [None, "application/cap+xml", "text/xml", "application/octet-stream"]
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


# --- values that have broken parsers before ----------------------------------------------

NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\ufeff",
    "\u2028",
    "\x1b[31m",
    "é霧",
    "<&>\"'",
    "]]>",
    "x" * 3000,
    "1" * 5000,
    "9999-12-31T23:59:59-23:59",
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00-00:00",
    "2016-12-31T23:59:60+00:00",
    "0000-01-01T00:00:00+00:00",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01t00:00:00z",
    "2026-01-01T00:00:00.1234567890123Z",
    "2026-02-30T00:00:00+00:00",
    "TLP:RED",
    "WHITE",
    "amber+strict",
    "LES, PII",
    "38.5,-120.1 " + "9" * 400,
    "38.5,-120.1 0",
    "90,180 -90,-180 90,180 -90,-180",
    "1,1 1,1 1,1 1,1",
    "0,0 0,1 1,1 1,0 0,0",
    "s,i,2026-01-01T00:00:00+00:00 s,i",
    "http://a..b.invalid/hook",
    "http://" + "a" * 64 + ".invalid/",
    "https://127.0.0.1:9/hook",
    "+15005550006",
    "nobody@example.org",
    "America/Los_Angeles",
    "../../etc/passwd",
]
RAW_TOKENS = [
    "1" * 5000,
    "-" + "9" * 200,
    "1e999",
    "-1e999",
    "5e-324",
    "1.7976931348623157e308",
    "-0",
    "NaN",
    "Infinity",
    '"\\ud800"',
    '"\\u0000"',
    '"\\udfff\\ud800"',
    "[" * 40 + "]" * 40,
    "{}",
    "null",
]
BYTE_TOKENS = [
    b"<",
    b">",
    b"&",
    b"&#0;",
    b"&#xD800;",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xfe\xff",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"1e999",
    b"1" * 5000,
    b"NaN",
    b"\\u0000",
    b"\\ud800",
    b"<!DOCTYPE a>",
    b'<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
    b"&e;",
    b"<?xml-stylesheet href='http://127.0.0.1:9/x.xsl'?>",
    b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd"/>',
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b'<?xml version="1.0" encoding="UTF-16"?>',
    b'<?xml version="1.0" encoding="Shift_JIS"?>',
]

text_values = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=40))
scalar_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    text_values,
)
json_values = st.recursive(
    scalar_values,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(text_values, inner, max_size=4)
    ),
    max_leaves=12,
)


# --- mutations ----------------------------------------------------------------------------

Path = tuple[str | int, ...]


def _paths(node: Any, at: Path = ()) -> list[Path]:
    """Every place in a JSON tree that holds a value, the root included."""
    found = [at]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*at, index))
    return found


def _replace(node: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    node[path[0]] = _replace(node[path[0]], path[1:], value)
    return node


def _remove(node: Any, path: Path) -> Any:
    if not path:
        return None
    if len(path) == 1:
        del node[path[0]]
        return node
    _remove(node[path[0]], path[1:])
    return node


@st.composite
def mutated_tree(draw: st.DrawFn, base: Any) -> tuple[Any, dict[str, str]]:
    """A copy of `base` with a few values replaced, removed or added; raw JSON tokens (which
    json.dumps cannot write) stand in as markers, with what to put in their place."""
    tree = copy.deepcopy(base)
    raw: dict[str, str] = {}
    for step in range(draw(st.integers(1, 4))):
        paths = _paths(tree)
        path = draw(st.sampled_from(paths[1:] or paths))  # the root only when alone
        action = draw(st.sampled_from(["replace", "raw", "remove", "add"]))
        if action == "remove" and path:
            tree = _remove(tree, path)
        elif action == "raw":
            marker = f"@@raw{step}@@"
            raw[json.dumps(marker)] = draw(st.sampled_from(RAW_TOKENS))
            tree = _replace(tree, path, marker)
        elif action == "add" and isinstance(tree, dict):
            tree[draw(text_values)] = draw(json_values)
        else:
            tree = _replace(tree, path, draw(json_values))
    return tree, raw


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with a few bytes flipped, cut, repeated, or tokens of JSON and XML spliced in."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(data)))
        end = min(len(data), at + draw(st.integers(0, 64)))
        action = draw(st.sampled_from(["token", "flip", "cut", "repeat", "bytes"]))
        if action == "token":
            data[at:at] = draw(st.sampled_from(BYTE_TOKENS))
        elif action == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:end]
        elif action == "repeat":
            data[at:at] = data[at:end]
        else:
            data[at:at] = draw(st.binary(max_size=8))
    return bytes(data)


def json_bytes(tree: Any, raw: dict[str, str]) -> bytes:
    text = json.dumps(tree)
    for marker, token in raw.items():
        text = text.replace(marker, token)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated_json(draw: st.DrawFn, base: Any) -> bytes:
    body = json_bytes(*draw(mutated_tree(base)))
    return draw(mutated_bytes(body)) if draw(st.integers(0, 3)) == 0 else body


# --- what an accepted alert must be -------------------------------------------------------


def _matcher() -> Matcher:
    """A matcher with stakeholders whose rules look at areas, keywords and marks."""
    stakeholder = validate_stakeholder(
        {
            "name": "Fuzz",
            "organization": "Fuzz",
            "sector": "government",
            "jurisdiction": {
                "geocodes": [{"valueName": "SAME", "value": "006109"}],
                "polygons": [[[38.0, -121.0], [39.0, -121.0], [39.0, -119.0], [38.0, -121.0]]],
            },
            "clearance": {"maxTlp": "RED", "caveats": ["LES", "PII"], "lawEnforcement": True},
            "timezone": "Pacific/Kiritimati",
            "quietHours": {"start": "00:00", "end": "23:59"},
        }
    )
    stamps = {"createdAt": NOW.isoformat(), "updatedAt": NOW.isoformat()}
    contact = {"stakeholderId": "s-1", "channel": "email", "address": "f@example.org"}
    rules: list[dict[str, Any]] = [
        {"area": "jurisdiction"},
        {"keywords": ["flood", "fire"], "minSeverity": "Minor"},
        {"area": {"polygons": [[[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]]}},
        {},
    ]
    matcher = Matcher()
    matcher.load(
        [stakeholder_model(stakeholder | {"id": "s-1"} | stamps)],
        [contact_model(contact | {"id": "c-1", "label": "", "active": True} | stamps)],
        [
            subscription_model(
                validate_subscription({"stakeholderId": "s-1", "rule": rule, "channels": ["email"]})
                | {"id": f"r-{n}", "ackRequired": True, "includeExercises": True}
                | stamps
            )
            for n, rule in enumerate(rules)
        ],
    )
    return matcher


PLANNER = Planner(_matcher())
APPROVAL = ApprovalPolicy(("local tlp>=RED", "local pii", "cap caveat=LES"))


def assert_storable_and_plannable(alert: Alert) -> None:
    text = json.dumps(alert.to_json(), allow_nan=False)  # strict JSON, as PostgreSQL takes it
    assert "\\u0000" not in text
    alert.content_hash()
    moments = [alert.sent, alert.expires]
    for info in alert.infos:
        moments += [info.effective, info.onset, info.expires]
    for moment in moments:
        if moment is not None:
            moment.astimezone(UTC)
    initial_state(alert, NOW)
    rows = PLANNER.plan(alert)
    PLANNER.hold_for_quiet_hours(alert, rows, NOW)
    APPROVAL.hold_rule(alert)


def assert_details(errors: tuple[ErrorDetail, ...]) -> None:
    assert errors
    for error in errors:
        assert error.path.startswith("$")
        assert len(error.message) <= MAX_DETAIL_CHARS


REFUSALS = (RejectedInput, ApiError, TokenRefused)


def outcome(call: Callable[[], T]) -> tuple[T | None, Exception | None]:
    """What `call()` returned, or the typed refusal it raised; anything else propagates."""
    try:
        return call(), None
    except REFUSALS as refusal:
        return None, refusal


def check_intake(body: bytes, content_type: str | None) -> None:
    """The property of alert decoding: a named refusal, or alerts the service can keep."""
    alerts, refusal = outcome(lambda: decode_alerts(body, content_type, LIMITS, DEFAULTS))
    if alerts is None:
        assert isinstance(refusal, RejectedInput), refusal
        assert refusal.reason in INTAKE_REASONS, refusal
        assert_details(refusal.errors)
        event(f"refused: {refusal.reason}")
        return
    event("accepted")
    assert alerts
    for alert in alerts:
        assert_storable_and_plannable(alert)


# --- alert decoding -----------------------------------------------------------------------

CAP_XML_FIXTURES = sorted((FIXTURES_DIR / "cap" / "valid").glob("*.xml"))
LOCAL_FIXTURES = sorted((FIXTURES_DIR / "alerts").glob("*.json"))
NWS_FIXTURE = json.loads((FIXTURES_DIR / "nws" / "two_features.json").read_text())


@FUZZ
@given(st.data())
def test_cap_xml_fixtures_mutated_byte_by_byte(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(CAP_XML_FIXTURES)).read_bytes()
    body = data.draw(mutated_bytes(base))
    check_intake(body, data.draw(st.sampled_from(XML_CONTENT_TYPES)))


CAP_NS = "{urn:oasis:names:tc:emergency:cap:1.2}"
XML_ENCODINGS = ["UTF-8", "UTF-16", "UTF-16-LE", "UTF-32", "ISO-8859-1", "Shift_JIS", "cp1252"]


@st.composite
def rebuilt_cap_xml(draw: st.DrawFn) -> bytes:
    """A valid CAP XML fixture with element texts replaced, elements removed or repeated,
    written out again in one of the encodings XML allows, with or without its mark."""
    path = draw(st.sampled_from(CAP_XML_FIXTURES))
    root = ElementTree.fromstring(path.read_bytes())  # noqa: S314 - our own fixture
    elements = list(root.iter())
    for _ in range(draw(st.integers(1, 4))):
        element = draw(st.sampled_from(elements))
        action = draw(st.sampled_from(["text", "text", "remove", "repeat", "xinclude"]))
        parents = [p for p in elements if element in list(p)]
        if action == "text" or not parents:
            element.text = draw(text_values)
        elif action == "remove":
            parents[0].remove(element)
        elif action == "repeat":
            parents[0].append(copy.deepcopy(element))
        else:
            parents[0].append(ElementTree.Element("{http://www.w3.org/2001/XInclude}include"))
    encoding = draw(st.sampled_from(XML_ENCODINGS))
    text = ElementTree.tostring(root, encoding="unicode")
    declared = draw(st.sampled_from([encoding, "UTF-8", None]))
    if declared is not None:
        text = f'<?xml version="1.0" encoding="{declared}"?>' + text
    try:
        return text.encode(encoding, "xmlcharrefreplace")
    except UnicodeEncodeError:  # a lone surrogate: only UTF-8 can be made to carry one
        return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(rebuilt_cap_xml(), st.sampled_from(XML_CONTENT_TYPES))
def test_cap_xml_rebuilt_with_nasty_values_and_encodings(body: bytes, content_type: str) -> None:
    check_intake(body, content_type)


@FUZZ
@given(mutated_json(cap_json()), st.sampled_from(CONTENT_TYPES))
def test_cap_json_mutated(body: bytes, content_type: str | None) -> None:
    check_intake(body, content_type)


@st.composite
def cap_times(draw: st.DrawFn) -> str:
    """A CAP date-time anywhere from year 1 to 9999 with any offset CAP can write."""
    edges = [datetime(1, 1, 1), datetime(1, 1, 1, 23, 59), datetime(9999, 12, 31, 23, 59, 59)]
    moment = draw(
        st.one_of(
            st.sampled_from(edges),
            st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
        )
    )
    minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    sign = "-" if minutes < 0 else "+"
    offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}{offset}"


decimals = st.one_of(
    st.floats(min_value=-90, max_value=90).map(lambda v: f"{v:.6f}"),
    st.sampled_from(["0", "90", "-90.0", "89.9999999999", "1" * 30 + ".5"]),
)


@st.composite
def generated_cap_json(draw: st.DrawFn) -> bytes:
    """A CAP-JSON alert built field by field: mostly valid, with times across the whole
    calendar, odd circles and polygons, marks in parameters, references."""
    info = copy.deepcopy(cap_json()["info"][0])
    for name in ("effective", "onset", "expires"):
        if draw(st.booleans()):
            info[name] = draw(cap_times())
    lat, lon = draw(decimals), draw(decimals)
    radius = draw(st.sampled_from(["0", "2.5", "40000", "0.0000001", "9" * 400, "1e3"]))
    info["area"][0]["circle"] = [f"{lat},{lon} {radius}"]
    if draw(st.booleans()):
        info["area"][0]["polygon"] = [f"{lat},{lon} {lon},{lat} {lat},{lat} {lat},{lon}"]
    marks = st.one_of(st.sampled_from(["AMBER", "TLP:RED", "white", "LES, PII", "x"]), text_values)
    parameters = draw(st.lists(st.tuples(st.sampled_from(["TLP", "CAVEAT", "tlp "]), marks)))
    if parameters:
        info["parameter"] = [{"valueName": name, "value": value} for name, value in parameters]
    document = cap_json(draw(st.text(string.ascii_letters, min_size=1)), info=[info])
    document["sent"] = draw(cap_times())
    if draw(st.booleans()):
        document["msgType"] = draw(st.sampled_from(["Update", "Cancel"]))
        document["references"] = f"s@example.org,X-1,{draw(cap_times())}"
    return json.dumps(document).encode("utf-8", "surrogatepass")


@FUZZ
@given(generated_cap_json())
def test_cap_json_generated_across_the_calendar(body: bytes) -> None:
    check_intake(body, "application/json")


@FUZZ
@given(mutated_json(NWS_FIXTURE), st.sampled_from([None, "application/geo+json"]))
def test_nws_geojson_mutated(body: bytes, content_type: str | None) -> None:
    check_intake(body, content_type)


@FUZZ
@given(st.data())
def test_local_kinds_mutated(data: st.DataObject) -> None:
    base = fixture_document(data.draw(st.sampled_from(LOCAL_FIXTURES)).name)
    if data.draw(st.booleans()):
        base["sent"] = data.draw(st.one_of(cap_times(), text_values))
    check_intake(data.draw(mutated_json(base)), data.draw(st.sampled_from(CONTENT_TYPES)))


# --- API bodies ---------------------------------------------------------------------------


def _payload(body: bytes) -> StreamReader:
    payload = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    return payload


def _request(body: bytes, content_type: str) -> web.Request:
    app = web.Application()
    app[RUNTIME] = cast(Runtime, SimpleNamespace(processor=SimpleNamespace(limits=LIMITS)))
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    return make_mocked_request("POST", "/", headers, app=app, payload=_payload(body))


async def _json_body(body: bytes) -> Any:
    return await json_body(_request(body, "application/json"))


def refused_with_4xx(call: Callable[[], T]) -> T | None:
    """`call()`'s result, or None if it raised an ApiError with a 4xx status (or a
    RejectedInput with an admin reason); anything else fails the test."""
    result, refusal = outcome(call)
    event("accepted" if refusal is None else f"refused: {type(refusal).__name__}")
    if isinstance(refusal, ApiError):
        assert 400 <= refusal.status < 500, refusal
    elif isinstance(refusal, RejectedInput):
        assert refusal.reason in ADMIN_REASONS, refusal
        assert_details(refusal.errors)
    else:
        assert refusal is None, refusal
    return result


SIGNER = AckSigner(("k" * 40,))
ACK_BODY = {"token": SIGNER.sign("0" * 32, NOW + timedelta(hours=1)), "comment": "seen"}


@FUZZ
@given(mutated_json(ACK_BODY))
def test_json_body_and_the_ack_body(body: bytes) -> None:
    document = refused_with_4xx(lambda: run(_json_body(body)))
    if document is None:
        return
    fields = refused_with_4xx(lambda: validated("ack", document))
    if fields is None:
        return
    _verified, refusal = outcome(lambda: SIGNER.verify(fields["token"], NOW))
    assert refusal is None or (isinstance(refusal, TokenRefused) and refusal.status in (403, 410))


STAKEHOLDER = {
    "name": "Duty Officer Lee",
    "organization": "Example County Sheriff",
    "sector": "law_enforcement",
    "kind": "group",
    "jurisdiction": {
        "geocodes": [{"valueName": "SAME", "value": "006109"}],
        "polygons": [[[38.0, -121.0], [39.0, -121.0], [39.0, -119.0], [38.0, -121.0]]],
    },
    "clearance": {"maxTlp": "AMBER", "caveats": ["LES"], "lawEnforcement": True},
    "timezone": "America/Los_Angeles",
    "quietHours": {"start": "22:00", "end": "06:00"},
    "active": True,
}
CONTACTS = [
    {"stakeholderId": "s-1", "channel": "email", "address": "lee@example.org", "label": "x"},
    {"stakeholderId": "s-1", "channel": "sms", "address": "+1 202 555 0147", "active": False},
    {"stakeholderId": "s-1", "channel": "webhook", "address": "http://127.0.0.1:9/hook"},
]
SUBSCRIPTION = {
    "stakeholderId": "s-1",
    "rule": {
        "kinds": ["cap"],
        "events": ["Flood"],
        "area": {"geocodes": [{"valueName": "SAME", "value": "006109"}]},
        "keywords": ["flood"],
        "minUrgency": "Expected",
    },
    "channels": ["email", "sms"],
    "ackRequired": True,
    "escalationId": None,
}
ESCALATION = {
    "name": "desk",
    "steps": [
        {"afterSeconds": 60, "action": "resend"},
        {"afterSeconds": 120, "action": "notify", "supervisors": ["s-2"], "channels": ["sms"]},
    ],
}
CONTROL_BODIES = [
    {"comment": "looks right"},
    {"reason": "not ours to send"},
    {"stakeholderId": "s-1", "justification": "Imminent danger to life, confirmed by phone."},
    {"note": "reviewed with the duty officer"},
]


class NoNetworkLoop(asyncio.SelectorEventLoop):
    """Resolves nothing, as a resolver without network would: a host name is first encoded
    the way getaddrinfo encodes it (which is where bad names fail), then not found."""

    async def getaddrinfo(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str):
            host.encode("idna")
        raise socket.gaierror(socket.EAI_NONAME, "no network in the fuzz harness")


def _validate_contact(document: Any) -> Any:
    loop = NoNetworkLoop()
    try:
        return loop.run_until_complete(validate_contact(document, ()))
    finally:
        loop.close()


@FUZZ
@given(st.data())
def test_admin_bodies_through_their_validators(data: st.DataObject) -> None:
    validators: list[tuple[Any, Callable[[Any], Any]]] = [
        (STAKEHOLDER, validate_stakeholder),
        (SUBSCRIPTION, validate_subscription),
        (ESCALATION, validate_escalation),
        *((contact, _validate_contact) for contact in CONTACTS),
    ]
    base, validator = data.draw(st.sampled_from(validators))
    tree, _raw = data.draw(mutated_tree(base))
    if isinstance(tree, dict):  # the API refuses anything else before the validators
        refused_with_4xx(lambda: validator(tree))


labels = st.text(alphabet=string.ascii_lowercase + string.digits + "-_é.", max_size=70)
hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "2130706433", "0x7f.1", "[::1]", "[::ffff:10.0.0.1]", ""]),
    st.lists(labels, max_size=4).map(".".join),
)


@st.composite
def webhook_urls(draw: st.DrawFn) -> str:
    # Mostly what passes the shape checks, so that the host reaches the resolver.
    scheme = draw(st.sampled_from(["http", "https", "https", "ftp", "HTTP", ""]))
    userinfo = draw(st.sampled_from(["", "", "", "", "user:pw@", "@"]))
    port = draw(st.sampled_from(["", "", "", ":8443", ":0", ":65536", ":x", ":"]))
    return f"{scheme}://{userinfo}{draw(hosts)}{port}/{draw(st.text(max_size=8))}"


@FUZZ
@given(webhook_urls())
def test_webhook_contacts_generated(url: str) -> None:
    contact = {"stakeholderId": "s-1", "channel": "webhook", "address": url}
    refused_with_4xx(lambda: _validate_contact(contact))


@FUZZ
@given(st.data())
def test_control_bodies(data: st.DataObject) -> None:
    tree, _raw = data.draw(mutated_tree(data.draw(st.sampled_from(CONTROL_BODIES))))
    refused_with_4xx(lambda: decision_reason(tree, approve=True))
    refused_with_4xx(lambda: decision_reason(tree, approve=False))
    refused_with_4xx(lambda: release_request(tree))
    refused_with_4xx(lambda: review_note(tree))


# --- forms --------------------------------------------------------------------------------

TWILIO_FORM = {
    "MessageSid": "SM" + "0" * 32,
    "MessageStatus": "undelivered",
    "ErrorCode": "30003",
    "From": "+15005550006",
    "Body": "ACK 4821",
}
form_text = st.one_of(st.sampled_from(NASTY_TEXT[:12]), st.text(max_size=20))


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["zz", "----b", "x" * 70, ""]))
    parts = []
    for name, value in draw(st.dictionaries(form_text, form_text, max_size=4)).items():
        headers = [f'Content-Disposition: form-data; name="{name}"']
        headers += draw(
            st.lists(
                st.sampled_from(
                    [
                        'Content-Disposition: form-data; name="f"; filename="f.txt"',
                        "Content-Type: text/plain; charset=nope",
                        "Content-Type: text/plain; charset=utf-16",
                        "Content-Transfer-Encoding: base64",
                        "Content-Transfer-Encoding: quoted-printable",
                        "Content-Transfer-Encoding: x-unknown",
                        "Content-Encoding: gzip",
                        "Content-Type: multipart/mixed; boundary=yy",
                        "broken header line",
                    ]
                ),
                max_size=2,
            )
        )
        parts.append("\r\n".join(headers) + "\r\n\r\n" + value)
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                "multipart/form-data",
                f"multipart/mixed; boundary={boundary}",
            ]
        )
    )
    return body.encode("utf-8", "surrogatepass"), content_type


@st.composite
def urlencoded(draw: st.DrawFn) -> tuple[bytes, str]:
    fields = TWILIO_FORM | draw(st.dictionaries(form_text, form_text, max_size=4))
    body = "&".join(f"{k}={v}" for k, v in fields.items()).encode("utf-8", "surrogatepass")
    charset = draw(st.sampled_from(["", "; charset=utf-8", "; charset=nope", "; charset=utf-16"]))
    return body, "application/x-www-form-urlencoded" + charset


@st.composite
def forms(draw: st.DrawFn) -> tuple[bytes, str]:
    body, content_type = draw(st.one_of(urlencoded(), multipart()))
    return (draw(mutated_bytes(body)) if draw(st.booleans()) else body), content_type


async def _form(body: bytes, content_type: str) -> dict[str, str]:
    return await form_fields(_request(body, content_type))


@pytest.mark.filterwarnings("ignore::aiohttp.BadContentDispositionHeader")
@pytest.mark.filterwarnings("ignore::aiohttp.BadContentDispositionParam")
@FUZZ
@given(forms())
def test_forms_of_the_twilio_hooks_and_the_ack_page(form: tuple[bytes, str]) -> None:
    fields = refused_with_4xx(lambda: run(_form(*form)))
    if fields is None:
        return
    assert all(isinstance(v, str) and "\x00" not in k + v for k, v in fields.items())
    status_update(fields)
    body = fields.get("Body", "")
    opt_keyword(body)
    ack_reply(body)
    valid_twilio_signature("token", "https://example.gov/hooks/twilio/sms", fields, "sig")
