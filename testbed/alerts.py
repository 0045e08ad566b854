"""Sample alert documents, small and valid unless told otherwise."""

from __future__ import annotations

import json
from typing import Any

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"


def cap_json(identifier: str = "TEST-1", **overrides: Any) -> dict[str, Any]:
    """A valid CAP-JSON alert; keyword overrides replace top-level fields."""
    document: dict[str, Any] = {
        "identifier": identifier,
        "sender": "alerts@fusion.example.gov",
        "sent": "2026-11-24T10:00:00-05:00",
        "status": "Actual",
        "msgType": "Alert",
        "scope": "Public",
        "info": [
            {
                "language": "en-US",
                "category": ["Met"],
                "event": "Flash Flood Warning",
                "urgency": "Immediate",
                "severity": "Severe",
                "certainty": "Observed",
                "headline": "Flash flood warning for Example County",
                "description": "Heavy rain is causing flash flooding.",
                "expires": "2099-01-01T00:00:00-05:00",
                "area": [
                    {
                        "areaDesc": "Example County",
                        "polygon": ["38.47,-120.14 38.34,-119.95 38.52,-119.74 38.47,-120.14"],
                        "geocode": [{"valueName": "SAME", "value": "006109"}],
                    }
                ],
            }
        ],
    }
    document.update(overrides)
    return document


def cap_json_bytes(identifier: str = "TEST-1", **overrides: Any) -> bytes:
    return json.dumps(cap_json(identifier, **overrides)).encode()


def cap_xml(identifier: str = "TEST-XML-1", sent: str = "2026-11-24T10:00:00-05:00") -> bytes:
    """A valid CAP 1.2 XML alert."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{CAP_NS}">
  <identifier>{identifier}</identifier>
  <sender>alerts@fusion.example.gov</sender>
  <sent>{sent}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Safety</category>
    <event>Shelter in place</event>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Observed</certainty>
    <headline>Shelter in place near the rail yard</headline>
    <expires>2099-01-01T00:00:00-05:00</expires>
    <area><areaDesc>Rail yard</areaDesc><circle>38.5,-120.1 2.0</circle></area>
  </info>
</alert>""".encode()
