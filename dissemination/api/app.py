"""The HTTP application: health and readiness probes, bearer-token authentication, the
OpenAPI document, the Prometheus metrics, and the live parts every API's handlers share
(`Runtime`)."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from importlib import resources

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from core.errors import StoreUnavailable
from dissemination.api.errors import ApiError, error_middleware
from dissemination.api.guard import guard_middleware
from dissemination.api.metrics import add_metrics_route
from dissemination.api.tokens import Role, TokenInfo, TokenStore
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


RUNTIME = web.AppKey("runtime", Runtime)


async def authenticate(request: web.Request, *roles: Role) -> TokenInfo:
    """The caller's token if it holds one of `roles`; 401 without a valid token, 403 otherwise."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "unauthenticated", "a bearer token is required")
    try:
        token = await request.app[RUNTIME].tokens.verify(secret.strip())
    except StoreUnavailable:
        raise ApiError(503, "store_unavailable", "cannot verify the token right now") from None
    if token is None:
        raise ApiError(401, "unauthenticated", "unknown or revoked token")
    if token.role not in roles:
        raise ApiError(403, "forbidden", f"role {token.role.value} may not do this")
    return token


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def broker_ready(runtime: Runtime) -> bool:
    broker = runtime.broker
    return broker is not None and not broker.is_closed and broker.connected.is_set()


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    checks = {"broker": "ok" if broker_ready(runtime) else "unavailable"}
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
