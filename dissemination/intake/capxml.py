"""Safe decoding of CAP 1.2 and CAP 1.1 XML into the CAP-JSON form of `schemas/cap.json`.

Owns the XML side of federal alert intake: the size limit, parsing with defusedxml (no DTD,
no entities, no external references) and the mapping of CAP elements onto CAP-JSON keys.
It decodes, it does not validate: a required element that is missing or empty is passed
on (empty as "") so that the schema reports it with its path.
"""

from __future__ import annotations

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

    Reasons: body_too_large, xml_forbidden_construct, invalid_xml, unsupported_cap_version,
    not_cap. Schema validation is the caller's next step.
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


def _parse(body: bytes) -> Element:
    try:
        root: Element = SafeElementTree.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as exc:
        message = _FORBIDDEN.get(type(exc), "a forbidden XML construct was found")
        raise RejectedInput("xml_forbidden_construct", message) from exc
    except ParseError as exc:
        raise RejectedInput("invalid_xml", f"not well-formed XML: {exc}") from exc
    except (LookupError, ValueError) as exc:
        # expat's complaints about the declared encoding: unknown, or multi-byte.
        raise RejectedInput("invalid_xml", f"unsupported character encoding: {exc}") from exc
    return root


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
