"""Format dispatch and normalization: every accepted format becomes the same Alert model,
with handling marks applied (fail-closed default, CAP scope Public, legacy WHITE)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.alert import Kind, MsgType, Status, Tlp
from core.errors import ErrorDetail, RejectedInput
from dissemination.intake.decoding import DecodeLimits, decode_alerts, media_type
from dissemination.intake.normalize import HandlingDefaults, alert_from_cap, alert_from_local
from testbed.alerts import cap_json, cap_json_bytes, cap_xml
from tests.alerts import fixture_document
from tests.samples import FIXTURES_DIR, sample_params

LIMITS = DecodeLimits(max_bytes=1_048_576, max_depth=32)
DEFAULTS = HandlingDefaults(default_tlp=Tlp.AMBER_STRICT, public_scope_tlp=Tlp.CLEAR)


def _decode(body: bytes, content_type: str | None = None) -> list:  # type: ignore[type-arg]
    return decode_alerts(body, content_type, LIMITS, DEFAULTS)


def test_cap_xml_and_cap_json_of_the_same_alert_normalize_alike() -> None:
    (from_xml,) = _decode(cap_xml("SAME-1"), "application/cap+xml")
    document = {
        "identifier": "SAME-1",
        "sender": "alerts@fusion.example.gov",
        "sent": "2026-11-24T10:00:00-05:00",
        "status": "Actual",
        "msgType": "Alert",
        "scope": "Public",
        "info": [
            {
                "category": ["Safety"],
                "event": "Shelter in place",
                "urgency": "Immediate",
                "severity": "Extreme",
                "certainty": "Observed",
                "headline": "Shelter in place near the rail yard",
                "expires": "2099-01-01T00:00:00-05:00",
                "area": [{"areaDesc": "Rail yard", "circle": ["38.5,-120.1 2.0"]}],
            }
        ],
    }
    (from_json,) = _decode(json.dumps(document).encode(), "application/json")
    assert from_xml.id == from_json.id
    assert from_xml.infos == from_json.infos
    assert from_xml.infos[0].areas[0].circles[0].radius_km == 2.0
    assert (from_xml.source_format, from_json.source_format) == ("cap-xml", "cap-json")


@pytest.mark.parametrize(
    ("scope", "handling", "expected", "defaulted"),
    [
        ("Public", None, Tlp.CLEAR, True),
        ("Restricted", None, Tlp.AMBER_STRICT, True),
        ("Public", {"tlp": "WHITE"}, Tlp.CLEAR, False),
        ("Public", {"tlp": "RED", "caveats": ["LES"]}, Tlp.RED, False),
        ("Private", {"caveats": ["PII"]}, Tlp.AMBER_STRICT, True),
    ],
)
def test_handling_marks_default_fail_closed(
    scope: str, handling: dict[str, object] | None, expected: Tlp, defaulted: bool
) -> None:
    extra: dict[str, object] = {"scope": scope}
    if scope == "Restricted":
        extra["restriction"] = "Partners only"
    if scope == "Private":
        extra["addresses"] = "ops@example.gov"
    if handling is not None:
        extra["handling"] = handling
    (alert,) = _decode(json.dumps(cap_json("H-1", **extra)).encode())
    assert alert.handling.tlp is expected
    assert alert.handling.tlp_defaulted is defaulted
    assert alert.handling.caveats == tuple((handling or {}).get("caveats", ()))  # type: ignore[arg-type]


def test_tlp_parameter_in_cap_xml_is_read() -> None:
    (alert,) = _decode((FIXTURES_DIR / "cap" / "valid" / "tlp_parameter.xml").read_bytes())
    assert alert.handling.tlp is Tlp.AMBER
    assert not alert.handling.tlp_defaulted


def _info(*parameters: tuple[str, str]) -> dict[str, object]:
    info = dict(cap_json()["info"][0])
    info["parameter"] = [{"valueName": name, "value": value} for name, value in parameters]
    return info


@pytest.mark.parametrize(
    ("handling", "infos", "tlp", "caveats", "conflict"),
    [
        # two info blocks that disagree: the stricter wins, wherever it stands
        (None, [_info(("TLP", "GREEN")), _info(("TLP", "RED"))], Tlp.RED, (), ("GREEN", "RED")),
        (None, [_info(("TLP", "RED")), _info(("TLP", "GREEN"))], Tlp.RED, (), ("GREEN", "RED")),
        # a handling field and a parameter
        ({"tlp": "GREEN"}, [_info(("TLP", "AMBER"))], Tlp.AMBER, (), ("GREEN", "AMBER")),
        ({"tlp": "RED"}, [_info(("TLP", "CLEAR"))], Tlp.RED, (), ("CLEAR", "RED")),
        # two parameters in one block, and caveats from everywhere
        (
            {"caveats": ["LES"]},
            [_info(("TLP", "AMBER"), ("TLP", "AMBER+STRICT"), ("CAVEAT", "PII"))],
            Tlp.AMBER_STRICT,
            ("LES", "PII"),
            ("AMBER", "AMBER+STRICT"),
        ),
        # the same mark twice is no conflict
        ({"tlp": "AMBER"}, [_info(("TLP", "tlp:amber"))], Tlp.AMBER, (), ()),
    ],
)
def test_conflicting_marks_take_the_strictest_tlp_and_every_caveat(
    handling: dict[str, object] | None,
    infos: list[dict[str, object]],
    tlp: Tlp,
    caveats: tuple[str, ...],
    conflict: tuple[str, ...],
) -> None:
    extra: dict[str, object] = {"info": infos}
    if handling is not None:
        extra["handling"] = handling
    (alert,) = _decode(json.dumps(cap_json("CONFLICT-1", **extra)).encode())
    assert alert.handling.tlp is tlp
    assert alert.handling.caveats == caveats
    assert alert.handling.conflict == conflict
    assert "conflict" not in alert.to_json()["handling"]  # kept with the alert, not content


def test_an_unknown_tlp_in_any_place_is_refused_with_where_it_stands() -> None:
    document = cap_json("BAD-TLP", handling={"tlp": "RED"}, info=[_info(("TLP", "PURPLE"))])
    with pytest.raises(RejectedInput) as rejected:
        _decode(json.dumps(document).encode())
    assert rejected.value.reason == "invalid_handling"
    assert rejected.value.errors[0].path == "$.info[0].parameter.TLP"


def test_sar_becomes_a_security_alert_with_its_details_kept() -> None:
    document = fixture_document("sar_full.json")
    (alert,) = _decode(json.dumps(document).encode())
    assert alert.kind is Kind.SAR
    assert alert.infos[0].categories == ("Security",)
    assert alert.infos[0].event.startswith("Suspicious Activity: ")
    assert alert.infos[0].description == document["narrative"]
    assert alert.handling.tlp is Tlp.AMBER
    assert set(alert.handling.caveats) == {"LES", "PII"}
    assert alert.details["subjects"] == document["subjects"]


@pytest.mark.parametrize("kind", ["bolo_minimal.json", "advisory_minimal.json"])
def test_an_unmarked_local_alert_gets_the_default_whatever_its_scope(kind: str) -> None:
    # the public default is for unmarked CAP alerts of scope Public only: a local kind's scope
    # says nothing of what it holds (a BOLO names a person)
    document = fixture_document(kind) | {"scope": "Public"}
    document.pop("handling", None)
    (alert,) = _decode(json.dumps(document).encode())
    assert (alert.handling.tlp, alert.handling.tlp_defaulted) == (Tlp.AMBER_STRICT, True)


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES_DIR / "alerts").glob("*.json")))
def test_every_local_fixture_normalizes(name: str) -> None:
    (alert,) = _decode((FIXTURES_DIR / "alerts" / name).read_bytes())
    document = fixture_document(name)
    assert alert.kind.value == document["kind"]
    assert alert.msg_type is MsgType(document["msgType"])
    assert len(alert.references) == len(document.get("references", ()))
    assert alert.headline


def test_nws_feature_collection_yields_one_alert_per_feature() -> None:
    alerts = _decode(
        (FIXTURES_DIR / "nws" / "two_features.json").read_bytes(), "application/geo+json"
    )
    assert len(alerts) == 2
    assert len({a.id for a in alerts}) == 2
    assert all(a.source_format == "nws-geojson" for a in alerts)


def test_an_invalid_feature_rejects_the_whole_collection_with_its_path() -> None:
    collection = json.loads((FIXTURES_DIR / "nws" / "two_features.json").read_text())
    collection["features"][1]["properties"]["severity"] = "Apocalyptic"
    with pytest.raises(RejectedInput) as caught:
        _decode(json.dumps(collection).encode())
    assert caught.value.reason == "schema_violation"
    assert [e.path for e in caught.value.errors] == ["$.features[1].info[0].severity"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/cap+xml; charset=utf-8", "application/cap+xml"),
        (None, ""),
        (" Application/JSON ", "application/json"),
    ],
)
def test_media_type(header: str | None, expected: str) -> None:
    assert media_type(header) == expected


@pytest.mark.parametrize("path", sample_params("valid-1.2") + sample_params("valid-1.1"))
def test_public_valid_samples_normalize(path: Path) -> None:
    alerts = _decode(path.read_bytes())
    assert len(alerts) == 1
    assert alerts[0].status in set(Status)


@pytest.mark.parametrize("path", sample_params("nws-json"))
def test_public_nws_samples_normalize(path: Path) -> None:
    features = json.loads(path.read_bytes())["features"]
    assert len(_decode(path.read_bytes())) == len(features)


@pytest.mark.parametrize("path", sample_params("valid-1.2")[:3] + sample_params("valid-1.1")[:3])
def test_to_json_equals_the_dataclasses_rendering(path: Path) -> None:
    """The fast serializer must give exactly what dataclasses.asdict gives (hashes depend on it),
    less what is kept with an alert but is not its content (a handling conflict)."""
    (alert,) = _decode(path.read_bytes())
    reference = json.loads(json.dumps(dataclasses.asdict(alert), default=lambda t: t.isoformat()))
    del reference["handling"]["conflict"]
    assert json.loads(json.dumps(alert.to_json())) == reference | {"id": alert.id}


# --- values that pass the schema but that the parsers cannot take -----------------------------

BIG = "1" * 5000  # more digits than Python's int() converts by default (4300)


def _cap_with_info(**info: object) -> bytes:
    document = cap_json("PARSE-1")
    document["info"][0].update(info)
    return json.dumps(document).encode()


def _sar(**changes: object) -> bytes:
    return json.dumps(fixture_document("sar_minimal.json") | changes).encode()


def _nws_sent(sent: str) -> bytes:
    collection = json.loads((FIXTURES_DIR / "nws" / "two_features.json").read_text())
    collection["features"][1]["properties"]["sent"] = sent
    return json.dumps(collection).encode()


@pytest.mark.parametrize(
    ("body", "reason", "path"),
    [
        pytest.param(
            cap_json_bytes("P-1")[:-1] + b', "x": ' + BIG.encode() + b"}",
            "number_out_of_range",
            "$",
            id="integer-of-5000-digits",
        ),
        pytest.param(
            _sar(reportingAgency={"name": "x", "n": -int("9" * 300)}),
            "number_out_of_range",
            "$",
            id="integer-of-300-digits",
        ),
        pytest.param(b'{"identifier": "x", "n": 1e400}', "number_out_of_range", "$", id="1e400"),
        pytest.param(
            json.dumps(cap_json("P-2", sent="9999-12-31T23:59:59-23:59")).encode(),
            "invalid_field",
            "$.sent",
            id="sent-after-9999-in-utc",
        ),
        pytest.param(
            _cap_with_info(expires="0001-01-01T00:00:00+01:00"),
            "invalid_field",
            "$.info[0].expires",
            id="expires-before-year-1-in-utc",
        ),
        pytest.param(
            _sar(expires="9999-12-31T23:00:00-05:00"),
            "invalid_field",
            "$.expires",
            id="local-expires-after-9999-in-utc",
        ),
        pytest.param(
            _nws_sent("9999-12-31T23:59:59-23:59"),
            "invalid_field",
            "$.features[1].sent",
            id="nws-sent-after-9999-in-utc",
        ),
        pytest.param(
            _cap_with_info(area=[{"areaDesc": "x", "circle": ["38.5,-120.1 " + "9" * 400]}]),
            "invalid_field",
            "$.info[0].area[0].circle[0]",
            id="circle-radius-overflows",
        ),
    ],
)
def test_values_the_parsers_cannot_take_are_rejected_with_the_path(
    body: bytes, reason: str, path: str
) -> None:
    with pytest.raises(RejectedInput) as caught:
        _decode(body)
    assert caught.value.reason == reason
    assert [e.path for e in caught.value.errors] == [path]


@pytest.mark.parametrize(
    "moment",
    [
        "2016-12-31T23:59:60+00:00",  # a leap second
        "0000-01-01T00:00:00+00:00",  # year 0
        "2026-01-01T00:00:00+24:00",  # an offset of a whole day
        "2026-02-30T00:00:00+00:00",
        "2026-01-01T00:00:00",  # no offset
    ],
)
def test_normalizing_a_time_the_parser_refuses_names_the_field(moment: str) -> None:
    """The schema's format check should catch these first; the normalizer must not depend on
    it (jsonschema skips date-time when its checker is not installed)."""
    with pytest.raises(RejectedInput) as caught:
        alert_from_cap(cap_json("T-1", sent=moment), "cap-json", DEFAULTS)
    assert (caught.value.reason, [e.path for e in caught.value.errors]) == (
        "invalid_field",
        ["$.sent"],
    )
    local = fixture_document("sar_minimal.json") | {"expires": moment}
    with pytest.raises(RejectedInput) as caught:
        alert_from_local(local, DEFAULTS)
    assert [e.path for e in caught.value.errors] == ["$.expires"]


def test_rfc3339_lower_case_t_and_z_are_read() -> None:
    (alert,) = _decode(_sar(sent="2024-05-15t11:03:00z"))
    assert alert.sent == datetime(2024, 5, 15, 11, 3, tzinfo=UTC)
    assert alert.sent_text == "2024-05-15t11:03:00z"


def test_a_date_time_with_nanoseconds_is_read_to_the_microsecond() -> None:
    (alert,) = _decode(_sar(sent="2024-05-15T11:03:00.123456789Z"))
    assert alert.sent == datetime(2024, 5, 15, 11, 3, 0, 123456, tzinfo=UTC)


# --- NUL, which the store cannot hold -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        pytest.param(
            json.dumps(cap_json("NUL\u0000-1")).encode(), None, "nul_character", id="cap-json"
        ),
        pytest.param(
            _cap_with_info(headline="flood\u0000"), "application/json", "nul_character", id="info"
        ),
        pytest.param(_sar(narrative="a\u0000b"), None, "nul_character", id="local-kind"),
        pytest.param(
            _sar(reportingAgency={"name\u0000": "x"}), None, "nul_character", id="object-key"
        ),
        pytest.param(_nws_sent("\u0000"), None, "nul_character", id="nws"),
        pytest.param(
            cap_xml().replace(b"Rail yard", b"Rail&#0;yard"), None, "invalid_xml", id="xml-ref"
        ),
        pytest.param(
            cap_xml().replace(b"Rail yard", b"Rail\x00yard"), None, "invalid_xml", id="xml-raw"
        ),
        pytest.param(
            cap_xml()
            .decode()
            .replace('encoding="UTF-8"', 'encoding="UTF-16"')
            .replace("Rail yard", "Rail\u0000yard")
            .encode("utf-16"),
            None,
            "invalid_xml",
            id="xml-utf16",
        ),
    ],
)
def test_nul_is_refused_in_every_format(body: bytes, content_type: str | None, reason: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        _decode(body, content_type)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; profile=" + "x" * 300,  # longer than the payloads column holds
        "application/json; x=\u0000",
        "application/json\r\nX-Injected: 1",
    ],
)
def test_a_content_type_the_store_cannot_hold_is_refused(content_type: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        _decode(cap_json_bytes(), content_type)
    assert caught.value.reason == "unsupported_content_type"


def test_error_messages_are_bounded_even_when_they_quote_a_huge_value() -> None:
    """jsonschema quotes the instance in its message; a dead letter's header must stay small."""
    with pytest.raises(RejectedInput) as caught:
        _decode(json.dumps(cap_json("a b" * 200_000)).encode())
    assert caught.value.reason == "schema_violation"
    assert all(len(e.message) <= 1000 for e in caught.value.errors)


@pytest.mark.parametrize("kind", [[], {}, 1, None, True])
def test_a_kind_that_is_not_a_string_is_an_unknown_kind(kind: object) -> None:
    """Found by tests/test_fuzz.py: an unhashable kind raised TypeError."""
    with pytest.raises(RejectedInput) as caught:
        _decode(json.dumps({"kind": kind, "identifier": "x"}).encode())
    assert caught.value.reason == "unknown_kind"


def test_a_rejection_lists_at_most_twenty_problems_and_counts_the_rest() -> None:
    collection = json.loads((FIXTURES_DIR / "nws" / "two_features.json").read_text())
    collection["features"][0]["properties"]["severity"] = "Apocalyptic"
    collection["features"] = collection["features"][:1] * 50
    with pytest.raises(RejectedInput) as caught:
        _decode(json.dumps(collection).encode())
    errors = caught.value.errors
    assert len(errors) == 20
    assert errors[-1] == ErrorDetail("$", "and 31 more problems")
