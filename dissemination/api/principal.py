"""Who is calling: a shared API token, a personal token, or a signed-in staff account; with
the API roles that lets it act in and, for an account, its clearance.

How account roles map onto the API's token roles (`Role`), which the endpoints check:

    administrator  admin, approver, publisher, viewer   (and manages accounts)
    approver       approver, viewer                     (decides held alerts, reads)
    analyst        publisher, viewer                    (composes and sends, reads)
    viewer         viewer

An account holds the union of its roles' grants. A personal token carries one role that its
owner holds; a shared token exactly its own. Two-person approval compares accounts: an
administrator cannot approve an alert that any of their own sessions or tokens submitted."""

from __future__ import annotations

from dataclasses import dataclass

from dissemination.accounts.model import Account
from dissemination.accounts.roles import AccountRole
from dissemination.api.tokens import Role, TokenInfo
from dissemination.controls.authority import may_publish_as
from dissemination.store.audit import Actor
from subscriptions.model import Clearance

GRANTS: dict[AccountRole, frozenset[Role]] = {
    AccountRole.ADMINISTRATOR: frozenset(Role),
    AccountRole.APPROVER: frozenset({Role.APPROVER, Role.VIEWER}),
    AccountRole.ANALYST: frozenset({Role.PUBLISHER, Role.VIEWER}),
    AccountRole.VIEWER: frozenset({Role.VIEWER}),
}
RANK = (Role.ADMIN, Role.APPROVER, Role.PUBLISHER, Role.VIEWER)  # highest first


def grants_of(roles: frozenset[AccountRole]) -> frozenset[Role]:
    granted: frozenset[Role] = frozenset()
    for role in roles:
        granted |= GRANTS[role]
    return granted


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: `id` and `name` identify the token or account that acted, `role` is its
    highest API role and `grants` every role it may act in. `account` is the staff account
    behind it (None for a shared token); `session_id` is set when it signed in."""

    id: str
    name: str
    role: Role
    grants: frozenset[Role]
    senders: tuple[str, ...] = ()
    account: Account | None = None
    session_id: str | None = None
    second_factor: bool = True

    @property
    def clearance(self) -> Clearance | None:
        """What the caller may read (None: a shared token, bounded by nothing)."""
        return self.account.clearance if self.account is not None else None

    @property
    def actor(self) -> Actor:
        return Actor(self.id, self.name, self.account.id if self.account else None)

    @property
    def is_administrator(self) -> bool:
        """Administers accounts: an administrator account, or a shared admin token."""
        if self.account is None:
            return self.role is Role.ADMIN
        return AccountRole.ADMINISTRATOR in self.account.roles


def token_principal(token: TokenInfo, owner: Account | None) -> Principal | None:
    """The principal of a token; None when its owner is disabled or no longer holds its
    role. A personal token publishes only as those of its senders its owner still may: an
    administrator taking a sender from an account takes it from the account's tokens too."""
    if owner is None:
        return Principal(token.id, token.name, token.role, frozenset({token.role}), token.senders)
    if not owner.active or token.role not in grants_of(owner.roles):
        return None
    return Principal(
        token.id,
        f"{owner.username}:{token.name}",
        token.role,
        frozenset({token.role}),
        tuple(s for s in token.senders if may_publish_as(s, owner.senders)),
        owner,
    )


def session_principal(account: Account, session_id: str, second_factor: bool) -> Principal:
    grants = grants_of(account.roles)
    role = next((r for r in RANK if r in grants), Role.VIEWER)
    return Principal(
        account.id,
        account.username,
        role,
        grants,
        account.senders,
        account,
        session_id,
        second_factor,
    )
