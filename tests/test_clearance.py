"""The handling check (subscriptions/clearance.py): the whole matrix of TLP level x caveats x
clearance x stakeholder kind x channel, against an expectation written out independently here
from the policy's plain words, plus hand-picked rows that pin the order of the checks."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from core.alert import Handling, Tlp
from subscriptions.clearance import WithheldCode, withheld_reason
from subscriptions.model import (
    Channel,
    Clearance,
    Jurisdiction,
    Sector,
    Stakeholder,
    StakeholderKind,
)

# The policy in its own words, in plain strings: nothing below imports an order or a rank.
TLP_LEVELS = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]  # least to most restrictive
CAVEAT_SETS: list[frozenset[str]] = [
    frozenset(),
    frozenset({"LES"}),
    frozenset({"PII"}),
    frozenset({"LES", "PII"}),
]
# name: (max TLP, caveats held, law enforcement)
CLEARANCES: dict[str, tuple[str, frozenset[str], bool]] = {
    "clear-only": ("CLEAR", frozenset(), False),
    "green-pii": ("GREEN", frozenset({"PII"}), False),
    "amber-les-not-le": ("AMBER", frozenset({"LES"}), False),
    "amber-none-le": ("AMBER", frozenset(), True),
    "strict-les-pii-le": ("AMBER+STRICT", frozenset({"LES", "PII"}), True),
    "red-pii": ("RED", frozenset({"PII"}), False),
    "red-les-le": ("RED", frozenset({"LES"}), True),
    "red-all-le": ("RED", frozenset({"LES", "PII"}), True),
}
KINDS = ["individual", "group"]
CHANNELS = ["email", "sms", "webhook"]


def expected_code(
    tlp: str, caveats: frozenset[str], clearance: str, kind: str, channel: str
) -> str | None:
    max_tlp, held, law_enforcement = CLEARANCES[clearance]
    if TLP_LEVELS.index(tlp) > TLP_LEVELS.index(max_tlp):
        return "tlp_above_clearance"
    if caveats - held:
        return "caveat_not_held"
    if "LES" in caveats and not law_enforcement:
        return "les_requires_law_enforcement"
    if tlp == "RED" and kind == "group":
        return "red_requires_named_individual"
    if tlp == "RED" and channel == "webhook":
        return "red_not_by_webhook"
    return None


def stakeholder(clearance: str, kind: str) -> Stakeholder:
    max_tlp, held, law_enforcement = CLEARANCES[clearance]
    return Stakeholder(
        id="s1",
        name="Duty officer",
        organization="County OEM",
        sector=Sector.LAW_ENFORCEMENT if law_enforcement else Sector.EMERGENCY_MANAGEMENT,
        kind=StakeholderKind(kind),
        jurisdiction=Jurisdiction(),
        clearance=Clearance(Tlp(max_tlp), held, law_enforcement),
    )


MATRIX = list(itertools.product(TLP_LEVELS, CAVEAT_SETS, CLEARANCES, KINDS, CHANNELS))


@pytest.mark.parametrize(
    ("tlp", "caveats", "clearance", "kind", "channel"),
    [
        pytest.param(*row, id="-".join([row[0], "+".join(sorted(row[1])) or "none", *row[2:]]))
        for row in MATRIX
    ],
)
def test_withheld_matrix(
    tlp: str, caveats: frozenset[str], clearance: str, kind: str, channel: str
) -> None:
    handling = Handling(Tlp(tlp), tuple(sorted(caveats)))
    reason = withheld_reason(handling, stakeholder(clearance, kind), Channel(channel))
    expected = expected_code(tlp, caveats, clearance, kind, channel)
    assert (reason.code.value if reason else None) == expected


def test_matrix_exercises_every_outcome() -> None:
    outcomes = {expected_code(*row) for row in MATRIX}
    assert outcomes == {None, *(code.value for code in WithheldCode)}


# Hand-picked rows: the first failing check wins, in the documented order.
ORDER_CASES: list[tuple[str, str, tuple[str, ...], str, str, str, str | None]] = [
    (
        "tlp before caveats",
        "AMBER",
        ("PII",),
        "clear-only",
        "individual",
        "email",
        "tlp_above_clearance",
    ),
    (
        "tlp before red rules",
        "RED",
        (),
        "strict-les-pii-le",
        "group",
        "webhook",
        "tlp_above_clearance",
    ),
    (
        "caveat before LES rule",
        "GREEN",
        ("LES",),
        "green-pii",
        "individual",
        "email",
        "caveat_not_held",
    ),
    (
        "LES listed but not LE",
        "AMBER",
        ("LES",),
        "amber-les-not-le",
        "individual",
        "email",
        "les_requires_law_enforcement",
    ),
    (
        "LE without LES listed",
        "AMBER",
        ("LES",),
        "amber-none-le",
        "individual",
        "email",
        "caveat_not_held",
    ),
    ("caveats before group", "RED", ("PII",), "red-les-le", "group", "email", "caveat_not_held"),
    (
        "group before webhook",
        "RED",
        (),
        "red-all-le",
        "group",
        "webhook",
        "red_requires_named_individual",
    ),
    (
        "red webhook individual",
        "RED",
        ("LES",),
        "red-les-le",
        "individual",
        "webhook",
        "red_not_by_webhook",
    ),
    ("red email individual", "RED", ("LES", "PII"), "red-all-le", "individual", "sms", None),
    (
        "amber+strict group webhook",
        "AMBER+STRICT",
        ("LES",),
        "strict-les-pii-le",
        "group",
        "webhook",
        None,
    ),
]


@pytest.mark.parametrize(
    ("tlp", "caveats", "clearance", "kind", "channel", "code"),
    [pytest.param(*c[1:], id=c[0]) for c in ORDER_CASES],
)
def test_order_of_checks(
    tlp: str, caveats: tuple[str, ...], clearance: str, kind: str, channel: str, code: str | None
) -> None:
    reason = withheld_reason(
        Handling(Tlp(tlp), caveats), stakeholder(clearance, kind), Channel(channel)
    )
    assert (reason.code.value if reason else None) == code


def test_caveat_detail_names_the_missing_caveats() -> None:
    reason = withheld_reason(
        Handling(Tlp.GREEN, ("FOUO", "LES", "PII")),
        stakeholder("green-pii", "individual"),
        Channel.EMAIL,
    )
    assert reason is not None
    assert reason.code == WithheldCode.CAVEAT_NOT_HELD
    assert "FOUO" in reason.detail
    assert "LES" in reason.detail
    assert "PII" not in reason.detail


def test_caveats_compare_case_insensitively() -> None:
    holder = stakeholder("green-pii", "individual")
    lower = replace(holder, clearance=Clearance(Tlp.GREEN, frozenset({"pii"})))
    assert withheld_reason(Handling(Tlp.GREEN, ("PII",)), lower, Channel.EMAIL) is None


def test_tlp_detail_names_both_levels() -> None:
    reason = withheld_reason(
        Handling(Tlp.AMBER), stakeholder("clear-only", "individual"), Channel.EMAIL
    )
    assert reason is not None
    assert "AMBER" in reason.detail
    assert "CLEAR" in reason.detail
