"""The accounts API. Administrators: create accounts (the answer carries a temporary
password, shown once), list and read them, change roles, clearance, senders and whether they
are active, reset a password or second factor, end an account's sessions, list and revoke
its tokens. Every account: its own personal API tokens (create with a role it holds and an
expiry, list, revoke). Every change is audited in the transaction that makes it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from core.clock import Clock
from dissemination.accounts.errors import AccountRefused
from dissemination.accounts.store import AccountStore
from dissemination.api.app import RUNTIME, authenticate
from dissemination.api.errors import ApiError
from dissemination.api.principal import Principal, grants_of
from dissemination.api.requests import json_body, limit_param, text_param, validated
from dissemination.api.session import refused
from dissemination.api.tokens import Role, TokenInfo, TokenStore
from dissemination.errors import TokenNameTaken
from dissemination.settings import AccountsSettings
from dissemination.store.audit import Actor, write_audit

TOKENS_ENTITY = "api_token"


class AccountEndpoints:
    """Handlers over the account store and the token store."""

    def __init__(self, store: AccountStore, settings: AccountsSettings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    async def _administrator(self, request: web.Request) -> Principal:
        principal = await authenticate(request, Role.ADMIN)
        if not principal.is_administrator:
            raise ApiError(403, "forbidden", "only administrators manage accounts")
        return principal

    @staticmethod
    def _id(request: web.Request, name: str = "id") -> str:
        value = request.match_info[name]
        if "\x00" in value:
            raise ApiError(404, "not_found", f"no such resource {value!r}")
        return value

    async def create(self, request: web.Request) -> web.Response:
        actor = (await self._administrator(request)).actor
        record, password = await self.create_account(actor, await json_body(request))
        return web.json_response(record | {"temporaryPassword": password}, status=201)

    async def create_account(self, actor: Actor, body: Any) -> tuple[dict[str, Any], str]:
        """A new account from an `account` document (422 naming each problem): its record
        and its temporary password. The API and the console create accounts here."""
        checked = validated("account", body)
        try:
            return await self.store.create(checked, actor, self.clock())
        except AccountRefused as error:
            raise refused(error) from None

    async def listing(self, request: web.Request) -> web.Response:
        await self._administrator(request)
        unknown = set(request.query) - {"limit", "after"}
        if unknown:
            raise ApiError(400, "invalid_parameter", f"unknown filter {sorted(unknown)[0]!r}")
        after = text_param("after", request.query.get("after", ""))
        items, cursor = await self.store.page(after, limit_param(request))
        return web.json_response({"items": items, "next": cursor})

    async def show(self, request: web.Request) -> web.Response:
        await self._administrator(request)
        try:
            return web.json_response(await self.store.record(self._id(request)))
        except AccountRefused as error:
            raise refused(error) from None

    async def update(self, request: web.Request) -> web.Response:
        actor = (await self._administrator(request)).actor
        body = await json_body(request)
        return web.json_response(await self.update_account(actor, self._id(request), body))

    async def update_account(self, actor: Actor, account_id: str, body: Any) -> dict[str, Any]:
        """The account changed as an `account_update` document says (422, 404, 409)."""
        changes = validated("account_update", body)
        try:
            return await self.store.update(account_id, changes, actor, self.clock())
        except AccountRefused as error:
            raise refused(error) from None

    async def reset_password(self, request: web.Request) -> web.Response:
        actor = (await self._administrator(request)).actor
        password = await self.reset_password_of(actor, self._id(request))
        return web.json_response({"temporaryPassword": password})

    async def reset_password_of(self, actor: Actor, account_id: str) -> str:
        """A new temporary password for the account (shown once)."""
        try:
            return await self.store.reset_password(account_id, actor, self.clock())
        except AccountRefused as error:
            raise refused(error) from None

    async def reset_totp(self, request: web.Request) -> web.Response:
        actor = (await self._administrator(request)).actor
        await self.reset_totp_of(actor, self._id(request))
        return web.json_response({"totpEnabled": False})

    async def reset_totp_of(self, actor: Actor, account_id: str) -> None:
        try:
            await self.store.reset_totp(account_id, actor, self.clock())
        except AccountRefused as error:
            raise refused(error) from None

    async def revoke_sessions(self, request: web.Request) -> web.Response:
        actor = (await self._administrator(request)).actor
        return web.json_response({"revoked": await self.end_sessions_of(actor, self._id(request))})

    async def end_sessions_of(self, actor: Actor, account_id: str) -> int:
        """End every session of the account: how many there were."""
        try:
            return await self.store.revoke_sessions(account_id, actor, self.clock())
        except AccountRefused as error:
            raise refused(error) from None

    async def account_tokens(self, request: web.Request) -> web.Response:
        await self._administrator(request)
        account_id = self._id(request)
        await self.existing(account_id)
        tokens = await request.app[RUNTIME].tokens.owned(account_id)
        return web.json_response({"items": [t.as_dict() for t in tokens]})

    async def existing(self, account_id: str) -> dict[str, Any]:
        """The account's record; 404 if there is none."""
        try:
            return await self.store.record(account_id)
        except AccountRefused as error:
            raise refused(error) from None

    async def revoke_account_token(self, request: web.Request) -> web.Response:
        actor = (await self._administrator(request)).actor
        account_id = self._id(request)
        await self.existing(account_id)
        return await self._revoke(request, account_id, actor)

    async def own_tokens(self, request: web.Request) -> web.Response:
        principal = await authenticate(request)
        account = _owner(principal)
        tokens = await request.app[RUNTIME].tokens.owned(account)
        return web.json_response({"items": [t.as_dict() for t in tokens]})

    async def create_own_token(self, request: web.Request) -> web.Response:
        """A personal token: only from a signed-in session, with a role its owner holds,
        expiring after `expiresInDays` (default and maximum in [accounts])."""
        principal = await authenticate(request)
        tokens: TokenStore = request.app[RUNTIME].tokens
        info, secret = await self.personal_token(tokens, principal, await json_body(request))
        return web.json_response(info.as_dict() | {"secret": secret}, status=201)

    async def personal_token(
        self, tokens: TokenStore, principal: Principal, document: Any
    ) -> tuple[TokenInfo, str]:
        """A personal token of the signed-in `principal` from a `personal_token` document,
        audited: its identity and its secret (shown once)."""
        account = principal.account
        if account is None or principal.session_id is None:
            raise ApiError(403, "session_required", "personal tokens are made from a session")
        body = validated("personal_token", document)
        role = Role(body["role"])
        if role not in grants_of(account.roles):
            raise ApiError(403, "role_not_held", f"the account does not hold the role {role.value}")
        days = body.get("expiresInDays", self.settings.token_default_days)
        if days > self.settings.token_max_days:
            raise ApiError(
                422,
                "expiry_too_long",
                f"personal tokens live at most {self.settings.token_max_days} days",
            )
        senders = account.senders if role in (Role.PUBLISHER, Role.ADMIN) else ()
        now = self.clock()
        try:
            info, secret = await tokens.create(
                body["name"], role, now, senders, account.id, timedelta(days=days)
            )
        except TokenNameTaken as taken:
            raise ApiError(409, "duplicate_token_name", str(taken)) from None
        await self._audit(principal.actor, "create", info)
        return info, secret

    async def revoke_own_token(self, request: web.Request) -> web.Response:
        principal = await authenticate(request)
        return await self._revoke(request, _owner(principal), principal.actor)

    async def _revoke(self, request: web.Request, owner: str, actor: Actor) -> web.Response:
        tokens: TokenStore = request.app[RUNTIME].tokens
        await self.revoke_token(tokens, self._id(request, "tokenId"), owner, actor)
        return web.Response(status=204)

    async def revoke_token(
        self, tokens: TokenStore, token_id: str, owner: str, actor: Actor
    ) -> TokenInfo:
        """Revoke a token of account `owner`, audited; 404 if it has no such token."""
        info = await tokens.revoke_owned(token_id, owner, self.clock())
        if info is None:
            raise ApiError(404, "not_found", "no such token of this account")
        await self._audit(actor, "revoke", info)
        return info

    async def _audit(self, actor: Actor, action: str, info: TokenInfo) -> None:
        database = self.store.database
        async with database.transaction() as conn:
            await write_audit(
                conn,
                at=self.clock(),
                actor=actor,
                action=action,
                entity=TOKENS_ENTITY,
                entity_id=info.id,
                before=None,
                after=info.as_dict(),
            )


def _owner(principal: Principal) -> str:
    if principal.account is None:
        raise ApiError(403, "account_required", "a shared token has no account")
    return principal.account.id


ACCOUNTS = web.AppKey("accounts", AccountEndpoints)


def add_account_routes(app: web.Application, endpoints: AccountEndpoints) -> None:
    app[ACCOUNTS] = endpoints
    app.router.add_post("/api/v1/accounts", endpoints.create)
    app.router.add_get("/api/v1/accounts", endpoints.listing, allow_head=False)
    app.router.add_get("/api/v1/accounts/{id}", endpoints.show, allow_head=False)
    app.router.add_patch("/api/v1/accounts/{id}", endpoints.update)
    app.router.add_post("/api/v1/accounts/{id}/password", endpoints.reset_password)
    app.router.add_delete("/api/v1/accounts/{id}/totp", endpoints.reset_totp)
    app.router.add_delete("/api/v1/accounts/{id}/sessions", endpoints.revoke_sessions)
    app.router.add_get("/api/v1/accounts/{id}/tokens", endpoints.account_tokens, allow_head=False)
    app.router.add_delete("/api/v1/accounts/{id}/tokens/{tokenId}", endpoints.revoke_account_token)
    app.router.add_get("/api/v1/account/tokens", endpoints.own_tokens, allow_head=False)
    app.router.add_post("/api/v1/account/tokens", endpoints.create_own_token)
    app.router.add_delete("/api/v1/account/tokens/{tokenId}", endpoints.revoke_own_token)
