"""Every TLP level x caveat x recipient kind x entitlement x channel, end to end through the
running service and the real channels: each forbidden cell gets zero deliveries and a
`withheld` row and record entry; each permitted cell gets its message and a `released` entry.

The rules are written out here independently of `subscriptions.clearance` (FIRST TLP 2.0 and
28 CFR 23.20): a recipient gets an alert only if its clearance ranks at or above the TLP,
it holds every caveat, LES goes only to law enforcement, and TLP:RED goes only to named
individuals and never by webhook.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel

from dissemination.controls import record
from dissemination.service import Service
from dissemination.settings import Settings
from tests.deliveryrig import (  # noqa: F401 - fixtures
    Sinks,
    delivery_settings_fixture,
    publish_alert,
    settled,
    sinks_fixture,
)
from tests.people import enrol

pytestmark = pytest.mark.slow

TLPS = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
CAVEATS: tuple[tuple[str, ...], ...] = ((), ("LES",), ("PII",))
KINDS = ("individual", "group")
CHANNELS = ("email", "sms", "webhook")
ENTITLEMENTS: dict[str, dict[str, Any]] = {
    "public": {"maxTlp": "CLEAR"},
    "partner": {"maxTlp": "AMBER"},
    "analyst": {"maxTlp": "RED", "caveats": ["PII"]},
    "officer": {"maxTlp": "RED", "caveats": ["LES", "PII"], "lawEnforcement": True},
}


def permitted(tlp: str, caveats: tuple[str, ...], kind: str, entitled: str, channel: str) -> bool:
    clearance = ENTITLEMENTS[entitled]
    if TLPS.index(tlp) > TLPS.index(clearance["maxTlp"]):
        return False
    if not set(caveats) <= set(clearance.get("caveats", ())):
        return False
    if "LES" in caveats and not clearance.get("lawEnforcement"):
        return False
    return tlp != "RED" or (kind == "individual" and channel != "webhook")


def address(channel: str, n: int, sinks: Sinks) -> str:
    return {
        "email": f"r{n}@example.org",
        "sms": f"+120255502{n:02d}",
        "webhook": f"{sinks.hooks.base}r{n}",
    }[channel]


async def test_every_forbidden_cell_is_withheld_and_recorded(
    service: Service, channel: AbstractChannel, settings: Settings, sinks: Sinks
) -> None:
    assert service.database is not None
    recipients = list(itertools.product(KINDS, ENTITLEMENTS, CHANNELS))
    ids = {}
    for n, (kind, entitled, via) in enumerate(recipients):
        person = await enrol(
            service,
            f"{kind}-{entitled}-{via}",
            {via: address(via, n, sinks)},
            kind=kind,
            clearance=ENTITLEMENTS[entitled],
        )
        ids[person.id] = (n, kind, entitled, via)
    expected_received: Counter[str] = Counter()
    cells = 0
    for tlp, caveats in itertools.product(TLPS, CAVEATS):
        handling = {"tlp": tlp, "caveats": list(caveats)}
        alert_id = await publish_alert(
            channel, settings, f"MATRIX-{tlp}-{'-'.join(caveats) or 'none'}", handling=handling
        )
        rows = await settled(service, alert_id, len(recipients))
        outcomes = {
            e["delivery_id"]: e["outcome"]
            for e in await record.export(service.database, alert_id=alert_id)
        }
        for row in rows:
            n, kind, entitled, via = ids[row["stakeholder_id"]]
            cell = (tlp, caveats, kind, entitled, via)
            cells += 1
            if permitted(tlp, caveats, kind, entitled, via):
                assert (row["state"], outcomes[row["id"]]) == ("sent", "released"), cell
                expected_received[address(via, n, sinks)] += 1
            else:
                assert (row["state"], outcomes[row["id"]]) == ("withheld", "withheld"), cell
                assert row["reason"], cell
    assert cells == len(TLPS) * len(CAVEATS) * len(recipients) == 360
    assert sum(expected_received.values()) == 154  # permitted cells; the other 206 are withheld
    received: Counter[str] = Counter()
    received.update(str(m["to"]) for m in sinks.twilio.messages)
    received.update(
        f"{sinks.hooks.base}{path}" for path, n in sinks.hooks.calls.items() for _ in range(n)
    )
    for index in range(len(sinks.smtp.messages)):
        received.update([str((await sinks.smtp.message(index)).parsed()["To"])])
    assert received == expected_received
    assert (await record.verify(service.database, key=service.record_key)).checked == 360
