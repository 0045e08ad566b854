"""The HTTP application: health and readiness probes, authentication (a bearer token or a
staff session cookie, with CSRF checks for the cookie), the OpenAPI document, the Prometheus
metrics, and the live parts every API's handlers share (`Runtime`)."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from importlib import resources

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from yarl import URL

from core.clock import utc_now
from core.errors import StoreUnavailable
from dissemination.accounts.signin import SignIn
from dissemination.accounts.store import AccountStore
from dissemination.api.errors import ApiError, error_middleware
from dissemination.api.guard import guard_middleware
from dissemination.api.metrics import add_metrics_route
from dissemination.api.principal import Principal, session_principal, token_principal
from dissemination.api.tokens import Role, TokenStore
from dissemination.broker.publisher import AlertPublisher
from dissemination.intake.pipeline import AlertPipeline
from dissemination.ledger.alerts import Ledger
from dissemination.settings import HttpSettings
from dissemination.store.database import Database

READINESS_TIMEOUT_SECONDS = 2.0


@dataclass(slots=True)
class Runtime:
    """The service's live parts that request handlers use."""

    database: Database
    ledger: Ledger
    tokens: TokenStore
    processor: AlertPipeline
    publisher: AlertPublisher | None = None
    broker: AbstractRobustConnection | None = None
    broker_user: str | None = None
    started: bool = True
    """False while the service is still starting, or stopping: it is not ready then, even
    with the broker and the store reachable (HTTP answers before the workers and the intake
    consumer take work)."""


RUNTIME = web.AppKey("runtime", Runtime)


@dataclass(slots=True)
class StaffAuth:
    """Staff sign-in, and the origin that cookie-authenticated changes must come from."""

    signin: SignIn
    public_url: str

    @property
    def origin(self) -> str:
        return str(URL(self.public_url).origin())

    @property
    def secure(self) -> bool:
        return URL(self.public_url).scheme == "https"


STAFF = web.AppKey("staff", StaffAuth)
SESSION_COOKIE = "dissemination_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authenticate(request: web.Request, *roles: Role, enrolling: bool = False) -> Principal:
    """The caller if it may act in one of `roles` (any caller when none are named): 401
    without a valid token or session, 403 otherwise. A session without its second factor is
    accepted only where `enrolling` (when `accounts.require_totp`)."""
    try:
        principal = await _principal(request)
    except StoreUnavailable:
        raise ApiError(503, "store_unavailable", "cannot verify the caller right now") from None
    staff = request.app.get(STAFF)
    if (
        not principal.second_factor
        and not enrolling
        and staff is not None
        and staff.signin.settings.require_totp
    ):
        raise ApiError(
            403,
            "second_factor_required",
            "enrol a TOTP second factor first (POST /api/v1/account/totp)",
        )
    if roles and not principal.grants & set(roles):
        raise ApiError(403, "forbidden", f"role {principal.role.value} may not do this")
    return principal


async def _principal(request: web.Request) -> Principal:
    header = request.headers.get("Authorization")
    staff = request.app.get(STAFF)
    if header is None and staff is not None and SESSION_COOKIE in request.cookies:
        return await _session(request, staff)
    scheme, _, secret = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "unauthenticated", "a bearer token or a session is required")
    runtime = request.app[RUNTIME]
    now = staff.signin.clock() if staff is not None else utc_now()
    token = await runtime.tokens.verify(secret.strip(), now)
    if token is None:
        raise ApiError(401, "unauthenticated", "unknown, expired or revoked token")
    owner = None
    if token.owner_id is not None:
        owner = await AccountStore(runtime.database).get(token.owner_id)
    principal = token_principal(token, owner)
    if principal is None:
        raise ApiError(401, "unauthenticated", "the token's owner may no longer use it")
    return principal


async def _session(request: web.Request, staff: StaffAuth) -> Principal:
    found = await staff.signin.session_of(request.cookies[SESSION_COOKIE])
    if found is None:
        raise ApiError(401, "unauthenticated", "the session has ended; sign in again")
    session, account = found
    if request.method not in SAFE_METHODS:
        check_origin(request, staff)
        token = request.headers.get(CSRF_HEADER, "")
        if not token or not session.csrf_matches(token):
            raise ApiError(403, "csrf_token", f"a change needs the session's {CSRF_HEADER} header")
    return session_principal(account, session.id, session.second_factor)


def check_origin(request: web.Request, staff: StaffAuth) -> None:
    """403 unless a cookie-carrying change comes from our own origin: its Origin header is
    the public URL's, or (without Origin) Sec-Fetch-Site says same-origin."""
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin.rstrip("/") != staff.origin:
            raise ApiError(403, "csrf_origin", "the request comes from another origin")
        return
    if request.headers.get("Sec-Fetch-Site") != "same-origin":
        raise ApiError(403, "csrf_origin", "the request does not say it comes from our origin")


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def broker_ready(runtime: Runtime) -> bool:
    broker = runtime.broker
    return broker is not None and not broker.is_closed and broker.connected.is_set()


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    checks = {
        "service": "ok" if runtime.started else "starting",
        "broker": "ok" if broker_ready(runtime) else "unavailable",
    }
    try:
        await asyncio.wait_for(runtime.database.ping(), READINESS_TIMEOUT_SECONDS)
        checks["store"] = "ok"
    except (StoreUnavailable, TimeoutError):
        checks["store"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )


@functools.cache
def _openapi_document() -> bytes:
    return resources.files("schemas").joinpath("openapi.json").read_bytes()


async def openapi(_request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json: the OpenAPI 3.1 description of this API."""
    return web.Response(body=_openapi_document(), content_type="application/json")


def create_app(runtime: Runtime, settings: HttpSettings) -> web.Application:
    """The aiohttp application; `runtime` holds the live parts its handlers use."""
    # Headroom over the ingest limit so an oversize body gets our own 413 with its code.
    app = web.Application(
        middlewares=[error_middleware, guard_middleware],
        client_max_size=settings.max_body_bytes + 1,
    )
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/openapi.json", openapi)
    add_metrics_route(app, runtime.processor.metrics)  # the pipeline's are the instance's
    return app
