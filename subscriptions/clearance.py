"""The handling check: whether an alert's TLP and caveats may go to a stakeholder on a channel.
Pure; the matcher turns every refusal into a Withheld entry, never a silent drop.

The checks run in this order and the first that fails is the reason reported:

    1. tlp_above_clearance            the alert's TLP ranks above the clearance's max_tlp
    2. caveat_not_held                a caveat of the alert is not among the clearance's caveats
    3. les_requires_law_enforcement   LES to a stakeholder that is not law enforcement, even
                                      if LES is listed among its caveats
    4. red_requires_named_individual  TLP:RED to a group (desk, shared mailbox, system)
    5. red_not_by_webhook             TLP:RED on the webhook channel

Entitlement first (1-3: the stakeholder may not have it at all), then the recipient's form
(4), then the channel (5), the only one another channel could cure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.alert import Handling, Tlp
from subscriptions.model import Channel, Clearance, Stakeholder, StakeholderKind

LES = "LES"
"""Law Enforcement Sensitive."""


_TLP_RANK = {tlp: tlp.rank for tlp in Tlp}


class WithheldCode(StrEnum):
    TLP_ABOVE_CLEARANCE = "tlp_above_clearance"
    CAVEAT_NOT_HELD = "caveat_not_held"
    LES_REQUIRES_LAW_ENFORCEMENT = "les_requires_law_enforcement"
    RED_REQUIRES_NAMED_INDIVIDUAL = "red_requires_named_individual"
    RED_NOT_BY_WEBHOOK = "red_not_by_webhook"


@dataclass(frozen=True, slots=True)
class WithheldReason:
    code: WithheldCode
    detail: str


def withheld_reason(
    handling: Handling, stakeholder: Stakeholder, channel: Channel
) -> WithheldReason | None:
    """Why the alert may not go to `stakeholder` on `channel`, or None if it may."""
    clearance = stakeholder.clearance
    above = _TLP_RANK[handling.tlp] > _TLP_RANK[clearance.max_tlp]
    if not above and not handling.caveats and handling.tlp != Tlp.RED:
        return None  # the common case, decided without building any set
    refused = entitlement_reason(handling, clearance)
    if refused is not None:
        return refused
    if handling.tlp == Tlp.RED and stakeholder.kind != StakeholderKind.INDIVIDUAL:
        return WithheldReason(
            WithheldCode.RED_REQUIRES_NAMED_INDIVIDUAL,
            f"TLP:RED goes only to named individuals, not to a {stakeholder.kind.value}",
        )
    if handling.tlp == Tlp.RED and channel == Channel.WEBHOOK:
        return WithheldReason(WithheldCode.RED_NOT_BY_WEBHOOK, "TLP:RED is never sent by webhook")
    return None


def entitlement_reason(handling: Handling, clearance: Clearance) -> WithheldReason | None:
    """Checks 1-3 alone: why a holder of `clearance` may not have the alert at all, or None.
    The whole rule for a named person reading it (a staff account through the API), where
    no recipient form or channel is involved."""
    if _TLP_RANK[handling.tlp] > _TLP_RANK[clearance.max_tlp]:
        return WithheldReason(
            WithheldCode.TLP_ABOVE_CLEARANCE,
            f"TLP:{handling.tlp.value} is above the clearance TLP:{clearance.max_tlp.value}",
        )
    if not handling.caveats:
        return None
    caveats = {c.upper() for c in handling.caveats}
    missing = sorted(caveats - {c.upper() for c in clearance.caveats})
    if missing:
        return WithheldReason(
            WithheldCode.CAVEAT_NOT_HELD, f"caveats not held: {', '.join(missing)}"
        )
    if LES in caveats and not clearance.law_enforcement:
        return WithheldReason(
            WithheldCode.LES_REQUIRES_LAW_ENFORCEMENT,
            "LES goes only to law-enforcement stakeholders",
        )
    return None
