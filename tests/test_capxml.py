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
from dissemination.intake.decoding import DecodeLimits, decode_documents
from tests.samples import FIXTURES_DIR, SAMPLES_DIR, sample_params

CAP_FIXTURES = FIXTURES_DIR / "cap"
LIMITS = DecodeLimits(max_bytes=1_048_576, max_depth=32)
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


# --- character encodings, as XML 1.0 (section 4.3.3, appendix F) has them ---

HEADLINE = "Brouillard près de l'aéroport, 霧"


JAPANESE = "霧の警報"


def encoded_alert(
    encoding: str, *, declared: str | None = None, bom: bytes = b"", headline: str = HEADLINE
) -> bytes:
    """The alert with a non-ASCII headline, declared `declared` (if given) and encoded."""
    declaration = f'<?xml version="1.0" encoding="{declared}"?>' if declared else ""
    text = declaration + alert_xml(info_xml(f"<headline>{headline}</headline>")).decode()
    return bom + text.encode(encoding)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(encoded_alert("utf-16"), id="utf-16-bom-undeclared"),
        pytest.param(encoded_alert("utf-16", declared="UTF-16"), id="utf-16-bom-declared"),
        pytest.param(
            encoded_alert("utf-16-be", declared="UTF-16", bom=b"\xfe\xff"), id="utf-16be-bom"
        ),
        pytest.param(encoded_alert("utf-16-le", declared="UTF-16"), id="utf-16le-no-bom"),
        pytest.param(encoded_alert("utf-16-be", declared="UTF-16"), id="utf-16be-no-bom"),
        pytest.param(encoded_alert("utf-32", declared="UTF-32"), id="utf-32-bom"),
        pytest.param(encoded_alert("utf-8", bom=b"\xef\xbb\xbf"), id="utf-8-bom"),
        pytest.param(encoded_alert("utf-8", declared="utf-8"), id="utf-8-declared"),
        pytest.param(encoded_alert("gb18030", declared="GB18030"), id="gb18030"),
    ],
)
def test_an_encoding_xml_allows_is_read(body: bytes) -> None:
    assert cap_document_from_xml(body)["info"][0]["headline"] == HEADLINE


@pytest.mark.parametrize(
    ("encoding", "declared"), [("shift_jis", "Shift_JIS"), ("euc_jp", "EUC-JP")]
)
def test_a_declared_multi_byte_encoding_is_read(encoding: str, declared: str) -> None:
    body = encoded_alert(encoding, declared=declared, headline=JAPANESE)
    assert cap_document_from_xml(body)["info"][0]["headline"] == JAPANESE


@pytest.mark.parametrize("declared", ["ISO-8859-1", "latin1", "windows-1252", "ISO-8859-15"])
def test_a_declared_single_byte_encoding_is_read(declared: str) -> None:
    headline = "Brouillard près de l'aéroport"
    body = (
        f'<?xml version="1.0" encoding="{declared}"?>'
        + alert_xml(info_xml(f"<headline>{headline}</headline>")).decode()
    )
    document = cap_document_from_xml(body.encode("cp1252" if "1252" in declared else "latin-1"))
    assert document["info"][0]["headline"] == headline


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            b"\xef\xbb\xbf" + encoded_alert("utf-8", declared="ISO-8859-1"),
            id="utf-8-bom-declared-latin-1",
        ),
        pytest.param(
            encoded_alert("utf-16", declared="ISO-8859-1"), id="utf-16-bom-declared-latin-1"
        ),
        pytest.param(encoded_alert("utf-16", declared="UTF-8"), id="utf-16-bom-declared-utf-8"),
        pytest.param(encoded_alert("utf-8", declared="UTF-16"), id="ascii-bytes-declared-utf-16"),
        pytest.param(
            encoded_alert("utf-16-le", declared="UTF-8"), id="utf-16-bytes-declared-utf-8"
        ),
        pytest.param(encoded_alert("utf-8", declared="x-unheard-of"), id="unknown"),
        pytest.param(encoded_alert("utf-8", declared="unicode_escape"), id="python-only-codec"),
        pytest.param(encoded_alert("utf-8", declared="hex"), id="not-a-text-encoding"),
        pytest.param(
            encoded_alert("latin-1", declared="UTF-8", headline="près"),
            id="latin-1-bytes-as-utf-8",
        ),
        pytest.param(b"\xff\xfe" + b"<\x00a", id="truncated-utf-16"),
        # Found by tests/test_fuzz.py: codecs.lookup raises ValueError on NUL.
        pytest.param(encoded_alert("utf-8", declared="\x00UTF-8"), id="nul-in-the-name"),
        pytest.param(encoded_alert("utf-8", declared="UTF 8"), id="space-in-the-name"),
        pytest.param(b'<?xml version="1.0" encoding=""?>' + alert_xml(), id="empty-name"),
    ],
)
def test_an_encoding_that_contradicts_itself_or_is_unknown_is_invalid_xml(body: bytes) -> None:
    with pytest.raises(RejectedInput) as caught:
        cap_document_from_xml(body)
    assert caught.value.reason == "invalid_xml"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(encoded_alert("utf-16"), id="utf-16-bom"),
        pytest.param(encoded_alert("utf-16-be", declared="UTF-16"), id="utf-16be-no-bom"),
        pytest.param(encoded_alert("utf-32", declared="UTF-32"), id="utf-32-bom"),
        pytest.param(b"\xef\xbb\xbf \n" + encoded_alert("utf-8"), id="utf-8-bom-then-space"),
    ],
)
def test_xml_in_any_encoding_is_recognized_without_a_content_type(body: bytes) -> None:
    (document,) = decode_documents(body, None, LIMITS)
    assert document.source_format == "cap-xml"


# --- what would pull content in from outside the document ---

XINCLUDE = "http://www.w3.org/2001/XInclude"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            alert_xml(f'<xi:include xmlns:xi="{XINCLUDE}" href="file:///etc/passwd"/>'),
            id="xinclude-in-alert",
        ),
        pytest.param(
            alert_xml(info_xml(f'<xi:include xmlns:xi="{XINCLUDE}" href="http://x/"/>')),
            id="xinclude-in-info",
        ),
        pytest.param(
            alert_xml(f'<x xmlns="urn:other"><include xmlns="{XINCLUDE}" href="a"/></x>'),
            id="xinclude-inside-a-foreign-element",
        ),
        pytest.param(
            alert_xml(f'<xi:fallback xmlns:xi="{XINCLUDE}">text</xi:fallback>'),
            id="xinclude-fallback",
        ),
        pytest.param(
            alert_xml('<xi:include xmlns:xi="http://www.w3.org/2003/XInclude" href="a"/>'),
            id="xinclude-2003-namespace",
        ),
        pytest.param(
            b'<!DOCTYPE alert SYSTEM "http://127.0.0.1:9/cap.dtd">' + alert_xml(),
            id="external-dtd",
        ),
        pytest.param(
            b'<!DOCTYPE alert PUBLIC "-//X//Y" "file:///etc/passwd">' + alert_xml(),
            id="public-dtd",
        ),
        pytest.param(
            b'<!DOCTYPE alert [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p">%p;]>' + alert_xml(),
            id="parameter-entity",
        ),
        pytest.param(
            b'<!DOCTYPE alert [<!ENTITY e SYSTEM "file:///etc/hostname">]>'
            + alert_xml("<note>&e;</note>"),
            id="external-entity",
        ),
        pytest.param(
            b'<!DOCTYPE alert [<!NOTATION n SYSTEM "x"><!ENTITY u SYSTEM "y" NDATA n>]>'
            + alert_xml(),
            id="unparsed-entity",
        ),
        pytest.param(
            encoded_alert("utf-16", declared="UTF-16").replace(
                "<scope>".encode("utf-16-le"),
                f'<xi:include xmlns:xi="{XINCLUDE}" href="a"/><scope>'.encode("utf-16-le"),
            ),
            id="xinclude-in-utf-16",
        ),
    ],
)
def test_constructs_that_pull_in_content_are_refused(body: bytes) -> None:
    with watching() as outside, pytest.raises(RejectedInput) as caught:
        cap_document_from_xml(body)
    assert caught.value.reason == "xml_forbidden_construct"
    assert outside == []


def test_a_stylesheet_instruction_is_kept_as_sent_and_never_followed() -> None:
    """`<?xml-stylesheet?>` only tells a browser how to show the document; NWS feeds carry one
    (so do six of the public valid samples). It is not read, fetched or applied."""
    body = b'<?xml-stylesheet href="http://127.0.0.1:9/cap.xsl" type="text/xsl"?>' + alert_xml()
    with watching() as outside:
        document = cap_document_from_xml(body)
    assert document["identifier"] == "T-1"
    assert outside == []
