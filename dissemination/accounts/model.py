"""A staff account as the code sees it, and its public record (what the API shows: never
the password hash, the TOTP secret or recovery codes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.alert import Tlp
from dissemination.accounts.roles import AccountRole
from subscriptions.model import Clearance

ENTITY = "account"
"""The audit log's entity name for accounts."""


@dataclass(frozen=True, slots=True)
class Account:
    """Who a member of staff is and what they may see and do."""

    id: str
    username: str
    display_name: str
    organization: str
    roles: frozenset[AccountRole]
    clearance: Clearance
    senders: tuple[str, ...]
    active: bool
    totp_enabled: bool
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime


def clearance_of(document: Mapping[Any, Any]) -> Clearance:
    """The clearance in the stakeholders' vocabulary: {"maxTlp", "caveats", "lawEnforcement"}."""
    return Clearance(
        Tlp.parse(document["maxTlp"]),
        frozenset(c.upper() for c in document.get("caveats", ())),
        bool(document.get("lawEnforcement", False)),
    )


def account_of(row: Mapping[Any, Any]) -> Account:
    return Account(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        organization=row["organization"],
        roles=frozenset(AccountRole(r) for r in row["roles"]),
        clearance=clearance_of(row["clearance"]),
        senders=tuple(row["senders"] or ()),
        active=bool(row["active"]),
        totp_enabled=bool(row["totp_enabled"]),
        locked_until=row["locked_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def record_of(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The account as the API shows it and the audit log keeps it."""
    locked = row["locked_until"]
    return {
        "id": row["id"],
        "username": row["username"],
        "displayName": row["display_name"],
        "organization": row["organization"],
        "roles": sorted(row["roles"]),
        "clearance": dict(row["clearance"]),
        "senders": list(row["senders"] or ()),
        "active": bool(row["active"]),
        "totpEnabled": bool(row["totp_enabled"]),
        "lockedUntil": locked.isoformat() if locked is not None else None,
        "createdAt": row["created_at"].isoformat(),
        "updatedAt": row["updated_at"].isoformat(),
    }
