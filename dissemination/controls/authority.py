"""Who may publish as which sender, and who may update or cancel an alert.

A publisher is bound to the senders it may publish as: an API token to those set when it was
created, a broker user to those `broker.publishers` grants it. An Update or Cancel is
accepted only with the sender of the alerts it refers to, so one originator can never
withdraw or rewrite another's alert. Senders compare without regard to letter case, as
CAP senders are written. An administrator may act for another sender only with a stated
reason, which is audited (`dissemination.api.app`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from core.alert import Alert, MsgType
from core.errors import ErrorDetail, RejectedInput


def sender_key(sender: str) -> str:
    """A sender as compared: trimmed, without regard to letter case."""
    return sender.strip().casefold()


@dataclass(frozen=True, slots=True)
class Submitter:
    """Who published a message, as far as the broker vouches for it. `principal` names them
    for the record (`token:<id>`, `amqp:<user>`, or None for the service itself); `senders`
    are the senders they may publish as, None when the service already checked (HTTP
    ingest) or published itself; `known` is False when the message names no broker user."""

    principal: str | None
    senders: frozenset[str] | None = None
    known: bool = True


SERVICE = Submitter(None)
"""The service itself, or a submission it checked before publishing."""


def parse_grants(entries: Iterable[str]) -> dict[str, frozenset[str]]:
    """`broker.publishers` ("user=sender" entries) as the senders each broker user may use."""
    grants: dict[str, set[str]] = {}
    for entry in entries:
        user, _, sender = entry.partition("=")
        grants.setdefault(user.strip(), set()).add(sender_key(sender))
    return {user: frozenset(senders) for user, senders in grants.items()}


def may_publish_as(sender: str, granted: Collection[str]) -> bool:
    """Whether `sender` is among the `granted` senders (compared as `sender_key`)."""
    return sender_key(sender) in {sender_key(s) for s in granted}


def foreign_senders_possible(alert: Alert) -> bool:
    """Whether the alert refers to others whose sender must be its own (an Update or
    Cancel with references)."""
    return alert.msg_type in (MsgType.UPDATE, MsgType.CANCEL) and bool(alert.references)


def foreign_senders(alert: Alert, referenced: Sequence[str]) -> list[str]:
    """The senders, other than the alert's own, of the stored alerts an Update or Cancel
    refers to (none for other message types)."""
    if alert.msg_type not in (MsgType.UPDATE, MsgType.CANCEL):
        return []
    own = sender_key(alert.sender)
    return sorted({s for s in referenced if sender_key(s) != own})


def check_submission(alert: Alert, submitter: Submitter, referenced_senders: Sequence[str]) -> None:
    """RejectedInput unless `submitter` may publish `alert` (for AMQP intake: the reasons
    are dead-letter codes)."""
    if not submitter.known:
        raise RejectedInput(
            "publisher_unknown",
            "the message names no broker user: publish with user_id set to your broker user",
        )
    if submitter.senders is None:
        return
    if not may_publish_as(alert.sender, submitter.senders):
        raise RejectedInput(
            "sender_not_allowed",
            [ErrorDetail("$.sender", f"{submitter.principal} may not publish as {alert.sender!r}")],
        )
    others = foreign_senders(alert, referenced_senders)
    if others:
        raise RejectedInput(
            "not_original_sender",
            [ErrorDetail("$.references", f"refers to alerts of another sender: {others[0]!r}")],
        )


def grants_for(grants: Mapping[str, frozenset[str]], user: str) -> frozenset[str]:
    """The senders broker user `user` may publish as (none if it has no grant)."""
    return grants.get(user, frozenset())
