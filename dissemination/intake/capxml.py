"""Safe decoding of CAP 1.2 and CAP 1.1 XML into the CAP-JSON form of `schemas/cap.json`.

Owns the XML side of federal alert intake: the size limit, the character encoding, parsing
with defusedxml and the mapping of CAP elements onto CAP-JSON keys. It decodes, it does not
validate: a required element that is missing or empty is passed on (empty as "") so that
the schema reports it with its path.

The encoding is found as XML 1.0 says (section 4.3.3 and appendix F): a byte-order mark
(UTF-8, UTF-16, UTF-32) decides; without one, the first bytes tell UTF-16 and UTF-32 from
ASCII-compatible encodings, and the XML declaration names which (UTF-8 when it names none).
A declaration that contradicts the mark or the bytes, or names an encoding we do not know,
is `invalid_xml`. Any character set Python decodes is read (Shift_JIS, GB18030, ...), except
Python's own codecs that are not character sets (`unicode_escape`, `idna`, ...). The HTTP or
AMQP charset parameter is not consulted: the document says what it is.

Nothing is ever fetched, and whatever would pull content in from outside the document is
refused as `xml_forbidden_construct` rather than dropped: a DTD (internal or external),
entity declarations, external references, and XInclude elements. A processing instruction
such as `<?xml-stylesheet?>` only asks a browser to style the document; it is kept in the
payload as sent, never read (NWS feeds carry one).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from core.errors import RejectedInput

MAX_BODY_BYTES = 1_048_576

CAP_VERSIONS: Mapping[str, str] = {
    "urn:oasis:names:tc:emergency:cap:1.2": "1.2",
    "urn:oasis:names:tc:emergency:cap:1.1": "1.1",
}

_FORBIDDEN: Mapping[type[Exception], str] = {
    DTDForbidden: "a document type declaration (DTD) is not allowed",
    EntitiesForbidden: "entity declarations are not allowed",
    ExternalReferenceForbidden: "external references are not allowed",
}
XINCLUDE_NAMESPACES = frozenset(
    {"http://www.w3.org/2001/XInclude", "http://www.w3.org/2003/XInclude"}
)

# Byte-order marks, longest first (a UTF-32-LE mark begins like a UTF-16-LE one).
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
# Appendix F: the first four bytes of "<?xm" (or of "<") without a mark.
_UNMARKED: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<\x00?", "utf-16-be"),
    (b"<\x00?\x00", "utf-16-le"),
)
_DECLARED = re.compile(
    r"<\?xml\s+version\s*=\s*(?:\"[^\"]*\"|'[^']*')\s+encoding\s*=\s*(?:\"([^\"]*)\"|'([^']*)')"
)
_ENCODING_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")  # XML 1.0's EncName
# Python codecs that decode bytes to text but are not character sets.
_NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"})

# Bounded so int() never meets Python's limit on the digits of an integer string.
_INTEGER = re.compile(r"[-+]?[0-9]{1,18}")
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _integer(text: str) -> int | str:
    return int(text) if _INTEGER.fullmatch(text) else text


def _decimal(text: str) -> float | str:
    return float(text) if _DECIMAL.fullmatch(text) else text


@dataclass(frozen=True, slots=True)
class _Shape:
    """How one CAP complex element maps onto a CAP-JSON object.

    Children not named in `children` are text; a number child that does not parse stays
    text, for the schema to report.
    """

    required: frozenset[str] = frozenset()
    repeated: frozenset[str] = frozenset()
    children: Mapping[str, _Shape] = field(default_factory=dict)
    numbers: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)


_PAIR = _Shape(required=frozenset({"valueName", "value"}))
_RESOURCE = _Shape(
    required=frozenset({"resourceDesc", "mimeType"}),
    numbers={"size": _integer},
)
_AREA = _Shape(
    required=frozenset({"areaDesc"}),
    repeated=frozenset({"polygon", "circle", "geocode"}),
    children={"geocode": _PAIR},
    numbers={"altitude": _decimal, "ceiling": _decimal},
)
_INFO = _Shape(
    required=frozenset({"category", "event", "urgency", "severity", "certainty"}),
    repeated=frozenset({"category", "responseType", "eventCode", "parameter", "resource", "area"}),
    children={"eventCode": _PAIR, "parameter": _PAIR, "resource": _RESOURCE, "area": _AREA},
)
_ALERT = _Shape(
    required=frozenset({"identifier", "sender", "sent", "status", "msgType", "scope"}),
    repeated=frozenset({"code", "info"}),
    children={"info": _INFO},
)


def cap_document_from_xml(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The CAP-JSON form of a CAP 1.2 or 1.1 XML document, or RejectedInput saying why not.

    Reasons: body_too_large, invalid_xml (including the encoding), xml_forbidden_construct,
    unsupported_cap_version, not_cap. Schema validation is the caller's next step.
    """
    if len(body) > max_bytes:
        raise RejectedInput("body_too_large", f"body is {len(body)} bytes, over {max_bytes}")
    root = _parse(body)
    namespace, version = _cap_namespace(root)
    document = _decode(root, _ALERT, namespace)
    if version == "1.1":
        _upgrade_certainty(document)
    document["capVersion"] = version
    return document


def looks_like_xml(body: bytes) -> bool:
    """Whether `body` starts like an XML document in some encoding (for sniffing)."""
    try:
        head = body[:64].decode(_encoding_family(body), errors="ignore")
    except LookupError:
        return False
    return head.lstrip("\ufeff \t\r\n").startswith("<")


def _encoding_family(body: bytes) -> str:
    """The encoding the byte-order mark or the first bytes show (XML 1.0 appendix F);
    "utf-8" for any ASCII-compatible encoding, whose name only the declaration gives."""
    for mark, encoding in _BOMS:
        if body.startswith(mark):
            return encoding
    for start, encoding in _UNMARKED:
        if body.startswith(start):
            return encoding
    return "utf-8"


def _declared_encoding(body: bytes, family: str) -> str | None:
    head = body[:512].decode(family, errors="replace").lstrip("\ufeff")
    match = _DECLARED.match(head)
    if match is None:
        return None
    double_quoted: str | None = match.group(1)
    return double_quoted if double_quoted is not None else match.group(2)


def _codec(name: str) -> codecs.CodecInfo:
    try:
        # codecs.lookup raises ValueError, not LookupError, on a name holding NUL.
        codec = codecs.lookup(name) if _ENCODING_NAME.fullmatch(name) else None
    except LookupError:
        codec = None
    if codec is None or not codec._is_text_encoding or codec.name in _NOT_CHARSETS:
        raise RejectedInput("invalid_xml", f"unsupported character encoding {name!r}")
    return codec


def _same_unicode_form(declared: codecs.CodecInfo, family: str) -> bool:
    """A UTF-16 or UTF-32 document may declare the form with or without its byte order."""
    return declared.name == family or declared.name == family[:-3]


def xml_text(body: bytes) -> str:
    """The document as text, decoded as XML 1.0 says (see the module's docstring)."""
    family = _encoding_family(body)
    declared = _declared_encoding(body, family)
    marked = any(body.startswith(mark) for mark, _ in _BOMS)
    encoding = family
    if declared is not None:
        codec = _codec(declared)
        if family != "utf-8" or marked:  # the mark or the bytes fix the encoding
            if not _same_unicode_form(codec, family):
                raise RejectedInput(
                    "invalid_xml",
                    f"the document declares {declared!r} but is encoded in {family.upper()}",
                )
        elif codec.name.startswith(("utf-16", "utf-32")):
            raise RejectedInput(
                "invalid_xml", f"the document declares {declared!r} but is not encoded in it"
            )
        else:
            encoding = codec.name
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise RejectedInput(
            "invalid_xml", f"not valid {encoding.upper()} at byte {exc.start}"
        ) from None
    return text.removeprefix("\ufeff")


def _parse(body: bytes) -> Element:
    # expat is given text, so it reads neither the mark nor the declared encoding again.
    text = xml_text(body)
    try:
        root: Element = SafeElementTree.fromstring(
            text, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as exc:
        message = _FORBIDDEN.get(type(exc), "a forbidden XML construct was found")
        raise RejectedInput("xml_forbidden_construct", message) from exc
    except ParseError as exc:
        raise RejectedInput("invalid_xml", f"not well-formed XML: {exc}") from exc
    _refuse_xinclude(root)
    return root


def _refuse_xinclude(root: Element) -> None:
    """ElementTree never performs XInclude; without this an include would vanish silently."""
    for element in root.iter():
        if _namespace_of(element) in XINCLUDE_NAMESPACES:
            raise RejectedInput(
                "xml_forbidden_construct",
                "XInclude is not allowed: an alert must be complete in itself",
            )


def _namespace_of(element: Element) -> str | None:
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith("{"):
        return None
    return tag[1:].partition("}")[0]


def _cap_namespace(root: Element) -> tuple[str, str]:
    """The root's CAP namespace and version, or the reason the root is not a CAP alert."""
    namespace, _, local = root.tag.rpartition("}")  # "{namespace}local" or "local"
    namespace = namespace.removeprefix("{")
    if local != "alert":
        raise RejectedInput("not_cap", f"the root element is <{local}>, not a CAP <alert>")
    version = CAP_VERSIONS.get(namespace)
    if version is None:
        raise RejectedInput(
            "unsupported_cap_version",
            f"<alert> in namespace {namespace!r} is neither CAP 1.2 nor CAP 1.1",
        )
    return namespace, version


def _decode(element: Element, shape: _Shape, namespace: str) -> dict[str, Any]:
    found: dict[str, list[Any]] = {}
    prefix = "{" + namespace + "}"
    for child in element:
        # Skips XML-DSig <Signature>, other namespaces' extensions (and comments, if any).
        if not isinstance(child.tag, str) or not child.tag.startswith(prefix):
            continue
        name = child.tag[len(prefix) :]
        value = _decode_child(child, name, shape, namespace)
        if value == "" and name not in shape.required:
            continue
        found.setdefault(name, []).append(value)
    # A single-valued element given twice stays a list, so the schema reports the repeat.
    return {
        name: values if name in shape.repeated or len(values) > 1 else values[0]
        for name, values in found.items()
    }


def _decode_child(child: Element, name: str, shape: _Shape, namespace: str) -> Any:
    inner = shape.children.get(name)
    if inner is not None:
        return _decode(child, inner, namespace)
    text = "".join(child.itertext()).strip()
    to_number = shape.numbers.get(name)
    return to_number(text) if to_number is not None and text else text


def _upgrade_certainty(document: dict[str, Any]) -> None:
    """CAP 1.1's certainty "Very Likely" was folded into "Likely" by CAP 1.2."""
    for info in document.get("info", []):
        if info.get("certainty") == "Very Likely":
            info["certainty"] = "Likely"
