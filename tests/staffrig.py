"""A running service with a fake clock and a client for staff sign-in: sessions carried by
their cookie and CSRF token by hand (the cookie may be Secure on plain loopback HTTP),
accounts made directly in the store, TOTP codes computed from the enrolment URI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest

from dissemination.accounts.store import AccountStore
from dissemination.accounts.totp import code_at, step_of
from dissemination.api.app import CSRF_HEADER, SESSION_COOKIE
from dissemination.api.tokens import Role, TokenStore
from dissemination.service import Service
from dissemination.settings import load_settings
from dissemination.store.audit import Actor
from tests.fakeclock import FakeClock

PUBLIC_URL = "https://dissemination.example"
OWN_ORIGIN = "own"  # call()'s default: the service's public URL
PUBLIC_URL_ENV = "DISSEMINATION_HTTP_PUBLIC_URL"


@dataclass(frozen=True)
class Signed:
    """A signed-in session as a browser holds it."""

    cookie: str
    csrf: str
    body: dict[str, Any]


@dataclass
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]
    cookies: Any


@dataclass
class Staff:
    service: Service
    base: str
    clock: FakeClock
    http: aiohttp.ClientSession
    admin_token: str
    public_url: str = PUBLIC_URL

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        token: str | None = None,
        session: Signed | None = None,
        origin: str | None = OWN_ORIGIN,
        csrf: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if session is not None:
            sent["Cookie"] = f"{SESSION_COOKIE}={session.cookie}"
            sent[CSRF_HEADER] = session.csrf if csrf is None else csrf
        if origin is not None:
            sent["Origin"] = self.public_url if origin == OWN_ORIGIN else origin
        async with self.http.request(method, self.base + path, json=body, headers=sent) as response:
            text = await response.text()
            parsed = (
                await response.json() if text and response.content_type.endswith("json") else text
            )
            return Answer(response.status, parsed, dict(response.headers), response.cookies)

    async def make_account(
        self, username: str, roles: list[str], max_tlp: str = "AMBER", **extra: Any
    ) -> tuple[str, str]:
        """A new account (id, temporary password), made in the store."""
        fields = {
            "username": username,
            "displayName": username.title(),
            "organization": "County Fusion Center",
            "roles": roles,
            "clearance": {"maxTlp": max_tlp, "caveats": ["LES"]},
        } | extra
        assert self.service.database is not None
        record, password = await AccountStore(self.service.database).create(
            fields, Actor(None, "test"), self.clock()
        )
        return str(record["id"]), password

    async def sign_in(
        self, username: str, password: str, *, code: str | None = None, **extra: Any
    ) -> Answer:
        body: dict[str, Any] = {"username": username, "password": password}
        if code is not None:
            body["code"] = code
        return await self.call("POST", "/api/v1/session", body=body | extra)

    @staticmethod
    def signed(answer: Answer) -> Signed:
        assert answer.status == 201, answer.body
        return Signed(answer.cookies[SESSION_COOKIE].value, answer.body["csrfToken"], answer.body)

    def code(self, secret: str, steps_later: int = 0) -> str:
        return code_at(secret, step_of(self.clock()) + steps_later)

    async def enrolled(self, username: str, password: str) -> tuple[Signed, str, list[str]]:
        """Sign in, enrol TOTP and confirm it: the session, the TOTP secret, recovery codes."""
        session = self.signed(await self.sign_in(username, password))
        begun = await self.call("POST", "/api/v1/account/totp", session=session)
        assert begun.status == 201, begun.body
        secret = parse_qs(urlparse(begun.body["uri"]).query)["secret"][0]
        confirmed = await self.call(
            "POST",
            "/api/v1/account/totp/confirm",
            body={"code": self.code(secret)},
            session=session,
        )
        assert confirmed.status == 200, confirmed.body
        self.clock.advance(30)  # the confirming code's time-step is used
        return session, secret, list(begun.body["recoveryCodes"])

    async def admin_session(self, username: str = "ada") -> Signed:
        _id, password = await self.make_account(username, ["administrator"], "RED")
        session, _secret, _codes = await self.enrolled(username, password)
        return session

    async def audit(self, entity: str, entity_id: str | None = None) -> list[dict[str, Any]]:
        query = f"/api/v1/audit?entity={entity}&limit=500"
        if entity_id is not None:
            query += f"&entityId={entity_id}"
        answer = await self.call("GET", query, token=self.admin_token)
        assert answer.status == 200, answer.body
        return list(answer.body["items"])


async def staff_service(env: dict[str, str], **overrides: str) -> AsyncIterator[Staff]:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    settings_env = env | {PUBLIC_URL_ENV: PUBLIC_URL} | overrides
    service = Service(load_settings(settings_env), clock=clock)
    await service.start()
    try:
        assert service.http is not None
        assert service.database is not None
        _info, token = await TokenStore(service.database).create(
            "shared-admin", Role.ADMIN, clock()
        )
        host, port = service.http.addresses[0][:2]
        jar = aiohttp.DummyCookieJar()
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            yield Staff(
                service, f"http://{host}:{port}", clock, http, token, settings_env[PUBLIC_URL_ENV]
            )
    finally:
        await service.stop()


@pytest.fixture(name="staff")
async def staff_fixture(service_env: dict[str, str]) -> AsyncIterator[Staff]:
    """The staff rig on this test's service settings (`staff_service`)."""
    async for rig in staff_service(service_env):
        yield rig


@pytest.fixture(name="store_kind")
def sqlite_only_fixture() -> str:
    """A module that imports this runs its tests on SQLite alone."""
    return "sqlite"


@pytest.fixture(name="store_kind")
def postgresql_only_fixture() -> str:
    """A module that imports this runs its tests on PostgreSQL alone."""
    return "postgresql"
