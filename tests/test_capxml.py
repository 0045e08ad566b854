"""CAP XML decoding: the public corpus, our own fixtures, hostile input and arbitrary bytes."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import RejectedInput
from core.validation import schema_errors, validate
from dissemination.intake.capxml import cap_document_from_xml
from tests.samples import FIXTURES_DIR, SAMPLES_DIR, sample_params

CAP_FIXTURES = FIXTURES_DIR / "cap"
CAP12 = "urn:oasis:names:tc:emergency:cap:1.2"
CAP11 = "urn:oasis:names:tc:emergency:cap:1.1"

# Why each public invalid sample must be rejected, and where (see the corpus MANIFEST.md).
INVALID_CORPUS: dict[str, tuple[str, set[str]]] = {
    "google-cap-library__invalid.cap": ("schema_violation", {"$"}),  # no <scope>
    "google-cap-library__canada_errors.cap": ("schema_violation", {"$"}),  # Update, <references/>
    "google-cap-library__noaa_errors.cap": (
        "schema_violation",
        {
            "$.info[0].urgency",
            "$.info[0].severity",
            "$.info[0].certainty",
            "$.info[0].area[0].polygon[0]",  # stray commas after two pairs
        },
    ),
    "google-cap-library__xee.cap": ("xml_forbidden_construct", {"$"}),
}

INVALID_FIXTURES: dict[str, tuple[str, set[str]]] = {
    "billion_laughs.xml": ("xml_forbidden_construct", {"$"}),
    "xxe_external_entity.xml": ("xml_forbidden_construct", {"$"}),
    "dtd_only.xml": ("xml_forbidden_construct", {"$"}),
    "cap10_namespace.xml": ("unsupported_cap_version", {"$"}),
    "not_well_formed.xml": ("invalid_xml", {"$"}),
    "missing_scope.xml": ("schema_violation", {"$"}),
    "update_without_references.xml": ("schema_violation", {"$"}),
    "bad_urgency.xml": ("schema_violation", {"$.info[0].urgency"}),
    "non_alert_root.xml": ("not_cap", {"$"}),
}

_outside_access: list[str] | None = None  # collects audit events while a watch is on


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _outside_access is not None and event.startswith(
        ("open", "socket.", "urllib.", "subprocess.", "os.system")
    ):
        _outside_access.append(f"{event} {args!r}")


sys.addaudithook(_audit)  # a hook cannot be removed; it records only inside watching()


@contextmanager
def watching() -> Iterator[list[str]]:
    """Every file open, socket, URL fetch or process the code inside attempts."""
    global _outside_access
    _outside_access = []
    try:
        yield _outside_access
    finally:
        _outside_access = None


def corpus_file(subdir: str, name: str) -> Path:
    path = SAMPLES_DIR / subdir / name
    if not path.is_file():
        pytest.skip(f"public CAP sample {subdir}/{name} not found")
    return path


def decoded_valid(path: Path) -> dict[str, Any]:
    document = cap_document_from_xml(path.read_bytes())
    assert schema_errors("cap", document) == []
    return document


def rejection(body: bytes) -> RejectedInput:
    """Why `body` fails intake: at decoding, or at validation against the cap schema."""
    with pytest.raises(RejectedInput) as caught:
        validate("cap", cap_document_from_xml(body))
    return caught.value


def alert_xml(inner: str = "", namespace: str = CAP12) -> bytes:
    header = (
        "<identifier>T-1</identifier><sender>s@example.gov</sender>"
        "<sent>2024-01-01T00:00:00+00:00</sent><status>Test</status>"
        "<msgType>Alert</msgType><scope>Public</scope>"
    )
    return f'<alert xmlns="{namespace}">{header}{inner}</alert>'.encode()


def info_xml(inner: str = "", certainty: str = "Likely") -> str:
    return (
        "<info><category>Met</category><event>Fog</event><urgency>Expected</urgency>"
        f"<severity>Minor</severity><certainty>{certainty}</certainty>{inner}</info>"
    )


# --- the public corpus ---


@pytest.mark.parametrize("path", sample_params("valid-1.2"))
def test_corpus_cap12_decodes_and_validates(path: Path) -> None:
    assert decoded_valid(path)["capVersion"] == "1.2"


@pytest.mark.parametrize("path", sample_params("valid-1.1"))
def test_corpus_cap11_decodes_and_validates(path: Path) -> None:
    assert decoded_valid(path)["capVersion"] == "1.1"


@pytest.mark.parametrize("path", sample_params("invalid"))
def test_corpus_invalid_is_rejected_for_its_reason(path: Path) -> None:
    assert path.name in INVALID_CORPUS, f"state why {path.name} must be rejected"
    reason, paths = INVALID_CORPUS[path.name]
    rejected = rejection(path.read_bytes())
    assert rejected.reason == reason
    assert paths <= {e.path for e in rejected.errors}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("google-cap-library__invalid.cap", "'scope' is a required property"),
        ("google-cap-library__canada_errors.cap", "'references' is a required property"),
    ],
)
def test_corpus_rejection_names_the_missing_element(name: str, message: str) -> None:
    rejected = rejection(corpus_file("invalid", name).read_bytes())
    assert [e.message for e in rejected.errors] == [message]


def test_corpus_noaa_errors_keeps_empty_required_elements_for_the_schema() -> None:
    document = cap_document_from_xml(
        corpus_file("invalid", "google-cap-library__noaa_errors.cap").read_bytes()
    )
    info = document["info"][0]
    assert (info["urgency"], info["severity"], info["certainty"]) == ("", "", "")
    assert "references" not in document  # empty optional element: absent
    assert len(info["area"][0]["polygon"]) == 1  # the empty <polygon></polygon> is dropped


def test_corpus_xxe_is_refused_without_touching_files_or_network() -> None:
    body = corpus_file("invalid", "google-cap-library__xee.cap").read_bytes()
    with watching() as outside, pytest.raises(RejectedInput) as caught:
        cap_document_from_xml(body)
    assert caught.value.reason == "xml_forbidden_construct"
    assert outside == []


def test_corpus_empty_optional_elements_are_left_out() -> None:
    document = decoded_valid(corpus_file("valid-1.2", "google-cap-library__canada.cap"))
    assert not {"restriction", "addresses", "note", "incidents"} & document.keys()
    assert all("contact" not in info for info in document["info"])


def test_corpus_signature_is_ignored_and_header_only_alert_kept() -> None:
    name = "oasiscap__ipaws-5e6dd9de023f1930ef6548d9.xml"  # signed Cancel without <info>
    document = decoded_valid(corpus_file("valid-1.2", name))
    assert document["msgType"] == "Cancel"
    assert "info" not in document
    assert not any("Signature" in key for key in document)


def test_corpus_prefixed_cap_elements_decode_like_default_namespace() -> None:
    document = decoded_valid(corpus_file("valid-1.2", "google-cap-library__australia.cap"))
    assert document["info"][0]["category"] == ["Fire", "Met"]
    assert document["info"][0]["area"][0]["circle"] == ["-35.3888,147.0598 25.0"]


# --- our own fixtures ---


@pytest.mark.parametrize("path", sorted((CAP_FIXTURES / "valid").iterdir()), ids=lambda p: p.name)
def test_fixture_valid_decodes_and_validates(path: Path) -> None:
    decoded_valid(path)


@pytest.mark.parametrize("name", sorted(INVALID_FIXTURES))
def test_fixture_invalid_is_rejected_for_its_reason(name: str) -> None:
    reason, paths = INVALID_FIXTURES[name]
    rejected = rejection((CAP_FIXTURES / "invalid" / name).read_bytes())
    assert rejected.reason == reason
    assert paths <= {e.path for e in rejected.errors}


def test_fixture_invalid_folder_has_an_expectation_per_file() -> None:
    assert {p.name for p in (CAP_FIXTURES / "invalid").iterdir()} == set(INVALID_FIXTURES)


@pytest.mark.parametrize("name", ["xxe_external_entity.xml", "billion_laughs.xml"])
def test_fixture_entity_attacks_resolve_nothing(name: str) -> None:
    body = (CAP_FIXTURES / "invalid" / name).read_bytes()
    with watching() as outside, pytest.raises(RejectedInput):
        cap_document_from_xml(body)
    assert outside == []


def test_fixture_multilingual_alert_maps_every_area_kind() -> None:
    document = decoded_valid(CAP_FIXTURES / "valid" / "multilingual_areas.xml")
    english, spanish = document["info"]
    assert (english["language"], spanish["language"]) == ("en-US", "es-US")
    assert english["category"] == ["CBRNE", "Safety"]
    assert english["responseType"] == ["Shelter", "Monitor"]
    area = english["area"][0]
    assert area["polygon"] == [
        "38.91,-77.05 38.93,-77.01\n        38.90,-76.98 38.88,-77.03 38.91,-77.05"
    ]
    assert area["circle"] == ["38.905,-77.02 2.5"]
    assert [(g["valueName"], g["value"]) for g in area["geocode"]] == [
        ("FIPS6", "024031"),
        ("SAME", "024031"),
        ("UGC", "MDZ504"),
    ]
    assert (area["altitude"], area["ceiling"]) == (0.0, 1500.5)
    assert english["resource"][0]["size"] == 48213
    trimmed = "A rail car is leaking chlorine gas at the Riverside rail yard."
    assert english["description"] == trimmed
    assert spanish["event"] == "Liberación de materiales peligrosos"
    assert document["code"] == ["IPAWSv1.0"]
    assert "note" not in document  # whitespace only
    assert "routing" not in document  # another namespace's extension


def test_fixture_update_and_cancel_carry_references() -> None:
    update = decoded_valid(CAP_FIXTURES / "valid" / "update_references.xml")
    cancel = decoded_valid(CAP_FIXTURES / "valid" / "cancel_references.xml")
    first = "eoc@example-county.gov,FC-2024-0419-HAZMAT-001,2024-04-19T14:05:00-04:00"
    assert update["references"] == first
    assert cancel["references"].split() == [
        first,
        "eoc@example-county.gov,FC-2024-0419-HAZMAT-002,2024-04-19T15:30:00-04:00",
    ]
    assert "info" not in cancel


def test_fixture_cap11_very_likely_becomes_likely() -> None:
    document = decoded_valid(CAP_FIXTURES / "valid" / "cap11_very_likely.xml")
    assert document["capVersion"] == "1.1"
    assert document["info"][0]["certainty"] == "Likely"


def test_very_likely_is_not_cap12() -> None:
    rejected = rejection(alert_xml(info_xml(certainty="Very Likely")))
    assert [e.path for e in rejected.errors] == ["$.info[0].certainty"]


def test_fixture_iso_8859_1_text_is_decoded() -> None:
    document = decoded_valid(CAP_FIXTURES / "valid" / "iso8859_1.xml")
    info = document["info"][0]
    assert info["event"] == "Pluie verglaçante"
    assert "0 °C" in info["description"]
    assert info["area"][0]["areaDesc"] == "Trois-Rivières - Bécancour"


def test_fixture_tlp_parameter_stays_a_parameter() -> None:
    document = decoded_valid(CAP_FIXTURES / "valid" / "tlp_parameter.xml")
    assert {"valueName": "TLP", "value": "AMBER"} in document["info"][0]["parameter"]
    assert "handling" not in document
    assert document["restriction"] == "Law enforcement and fusion center partners only"


# --- edge cases of the decoder itself ---


def test_body_over_the_limit_is_refused_before_parsing() -> None:
    body = alert_xml()
    assert cap_document_from_xml(body, max_bytes=len(body))["identifier"] == "T-1"
    with pytest.raises(RejectedInput) as caught:
        cap_document_from_xml(body, max_bytes=len(body) - 1)
    assert caught.value.reason == "body_too_large"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'<?xml version="1.0" encoding="bogus"?><alert/>', id="unknown-encoding"),
        pytest.param(b'<?xml version="1.0" encoding="Shift_JIS"?><alert/>', id="multibyte"),
        pytest.param(b'<?xml version="1.0" encoding="UTF-16"?><alert/>', id="wrong-encoding"),
        pytest.param(
            b'<alert xmlns="' + CAP12.encode() + b'"><note>\xff</note></alert>', id="invalid-utf8"
        ),
        pytest.param(b"<alert><note>&xxe;</note></alert>", id="undeclared-entity"),
        pytest.param(b"<alert></alert><alert></alert>", id="two-roots"),
    ],
)
def test_not_well_formed_or_badly_encoded_is_invalid_xml(body: bytes) -> None:
    with pytest.raises(RejectedInput) as caught:
        cap_document_from_xml(body)
    assert caught.value.reason == "invalid_xml"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"<alert/>", "unsupported_cap_version", id="alert-without-namespace"),
        pytest.param(
            b'<alert xmlns="http://www.incident.com/cap/1.0"/>', "unsupported_cap_version", id="1.0"
        ),
        pytest.param(b'<cap:feed xmlns:cap="' + CAP12.encode() + b'"/>', "not_cap", id="cap-feed"),
        pytest.param(b"<html><body>alert</body></html>", "not_cap", id="html"),
    ],
)
def test_root_must_be_a_cap_12_or_11_alert(body: bytes, reason: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        cap_document_from_xml(body)
    assert caught.value.reason == reason


def test_cap11_namespace_sets_version() -> None:
    assert cap_document_from_xml(alert_xml(namespace=CAP11))["capVersion"] == "1.1"


def test_unknown_cap_element_reaches_the_schema() -> None:
    rejected = rejection(alert_xml(info_xml("<urgancy>Now</urgancy>")))
    assert [e.path for e in rejected.errors] == ["$.info[0]"]
    assert "urgancy" in rejected.errors[0].message


def test_repeated_single_element_reaches_the_schema() -> None:
    body = alert_xml("<note>one</note><note>two</note>")
    assert cap_document_from_xml(body)["note"] == ["one", "two"]
    assert [e.path for e in rejection(body).errors] == ["$.note"]


@pytest.mark.parametrize(
    ("resource", "size"),
    [
        ("<size>120</size>", 120),
        ("<size>12 KB</size>", "12 KB"),
        ("<size>" + "9" * 5000 + "</size>", "9" * 5000),
    ],
)
def test_resource_size_is_an_integer_when_it_parses(resource: str, size: object) -> None:
    inner = f"<resource><resourceDesc>map</resourceDesc><mimeType>image/png</mimeType>{resource}"
    document = cap_document_from_xml(alert_xml(info_xml(inner + "</resource>")))
    assert document["info"][0]["resource"][0]["size"] == size


def test_area_altitude_that_is_not_a_number_reaches_the_schema() -> None:
    body = alert_xml(info_xml("<area><areaDesc>x</areaDesc><altitude>high</altitude></area>"))
    assert [e.path for e in rejection(body).errors] == ["$.info[0].area[0].altitude"]


def test_comments_and_processing_instructions_do_not_split_text() -> None:
    body = alert_xml("<note>Roads <!-- aside --> closed<?pi x?> now</note>")
    assert cap_document_from_xml(body)["note"] == "Roads  closed now"


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_are_rejected(body: bytes) -> None:
    reason = None
    try:
        cap_document_from_xml(body)
    except RejectedInput as rejected:
        reason = rejected.reason
    assert reason in {None, "invalid_xml", "not_cap", "unsupported_cap_version"}


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.data())
def test_damaged_alerts_decode_or_are_rejected(data: st.DataObject) -> None:
    body = (CAP_FIXTURES / "valid" / "multilingual_areas.xml").read_bytes()
    start = data.draw(st.integers(0, len(body)))
    end = data.draw(st.integers(start, min(len(body), start + 40)))
    patch = data.draw(st.sampled_from([b"", b"<", b">", b"&", b"</info>", b"<info>", b"\xff"]))
    try:
        document = cap_document_from_xml(body[:start] + patch + body[end:])
    except RejectedInput:
        return
    schema_errors("cap", document)  # must not raise, whatever the document holds


def test_watching_does_see_file_and_network_access() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with watching() as outside:
            Path(__file__).read_bytes()
            socket.create_connection(server.getsockname(), timeout=1).close()
    assert any(event.startswith("open ") for event in outside)
    assert any(event.startswith("socket.connect ") for event in outside)
