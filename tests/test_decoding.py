"""Format dispatch and normalization: every accepted format becomes the same Alert model,
with handling marks applied (fail-closed default, CAP scope Public, legacy WHITE)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from core.alert import Kind, MsgType, Status, Tlp
from core.errors import RejectedInput
from dissemination.intake.decoding import DecodeLimits, decode_alerts, media_type
from dissemination.intake.normalize import HandlingDefaults
from tests.alerts import cap_json, cap_xml, fixture_document
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
