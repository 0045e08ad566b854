"""Approval rules: which alerts wait for a second administrator (pure; see
`dissemination.controls.approval`).

A rule is "<kinds> <condition>": kinds is `*`, `local` (the locally generated kinds) or
kind names joined by `|`; the condition is `tlp>=LEVEL`, `caveat=NAME`, `pii` (the PII
caveat or any personal field the schemas mark) or `any`. Cancels are never held: holding a
correction back would keep the wrong alert standing.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.alert import Alert, Kind, MsgType, Tlp
from core.errors import ConfigError
from dissemination.controls.redaction import PII_CAVEAT, redact

LOCAL_KINDS = frozenset(kind.value for kind in Kind if kind is not Kind.CAP)


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """One rule: the kinds it covers (None: every kind) and its marking condition."""

    text: str
    kinds: frozenset[str] | None
    condition: str
    value: str = ""

    def matches(self, alert: Alert) -> bool:
        if self.kinds is not None and alert.kind.value not in self.kinds:
            return False
        handling = alert.handling
        if self.condition == "tlp":
            return handling.tlp.rank >= Tlp.parse(self.value).rank
        caveats = {caveat.upper() for caveat in handling.caveats}
        if self.condition == "caveat":
            return self.value.upper() in caveats
        if self.condition == "pii":
            return PII_CAVEAT in caveats or _carries_personal_data(alert)
        return True


def _carries_personal_data(alert: Alert) -> bool:
    if not alert.details:
        return False
    return bool(redact({"kind": alert.kind.value, "details": alert.details}).withheld)


def parse_rule(text: str) -> ApprovalRule:
    """A rule from its text; ValueError naming what is wrong."""
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"{text!r}: expected '<kinds> <condition>', e.g. 'local tlp>=RED'")
    kinds_text, condition = parts
    kinds: frozenset[str] | None
    if kinds_text == "*":
        kinds = None
    elif kinds_text == "local":
        kinds = LOCAL_KINDS
    else:
        kinds = frozenset(kinds_text.split("|"))
        unknown = sorted(kinds - {kind.value for kind in Kind})
        if unknown:
            raise ValueError(f"{text!r}: unknown kind {unknown[0]!r}")
    if condition in ("pii", "any"):
        return ApprovalRule(text, kinds, condition)
    name, sep, value = condition.partition(">=" if condition.startswith("tlp") else "=")
    if name == "tlp" and sep:
        try:
            Tlp.parse(value)
        except ValueError:
            raise ValueError(f"{text!r}: unknown TLP {value!r}") from None
        return ApprovalRule(text, kinds, "tlp", value)
    if name == "caveat" and sep and value:
        return ApprovalRule(text, kinds, "caveat", value)
    raise ValueError(f"{text!r}: the condition must be tlp>=LEVEL, caveat=NAME, pii or any")


class ApprovalPolicy:
    """Which alerts wait for a second administrator."""

    def __init__(self, rules: tuple[str, ...]) -> None:
        self.rules = tuple(parse_rule(text) for text in rules)

    def hold_rule(self, alert: Alert) -> str | None:
        """The first rule that holds `alert`, or None if it goes out at once."""
        if alert.msg_type is MsgType.CANCEL:
            return None
        return next((rule.text for rule in self.rules if rule.matches(alert)), None)


def approval_policy(rules: tuple[str, ...]) -> ApprovalPolicy:
    """The policy of the `approval.rules` setting; a bad rule is a ConfigError naming it (the
    service checks this before it connects to anything)."""
    try:
        return ApprovalPolicy(rules)
    except ValueError as error:
        raise ConfigError("approval.rules", list(rules), str(error)) from None
