"""The HTTP listener of a lead instance: every route of the API, the console and Twilio's
status and inbound hooks on one aiohttp application, behind the connection guard, listening
where `[http]` says."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import structlog
from aiohttp import web

from core.clock import Clock
from dissemination.accounts.signin import SignIn
from dissemination.accounts.store import AccountStore
from dissemination.acks.tokens import AckSigner
from dissemination.acks.tracking import AckStore
from dissemination.api.accounts import AccountEndpoints, add_account_routes
from dissemination.api.acks import AckEndpoints, add_ack_routes
from dissemination.api.app import Runtime, StaffAuth, create_app
from dissemination.api.bulk import add_bulk_routes
from dissemination.api.controls import ControlEndpoints, add_control_routes
from dissemination.api.directory import Admin, add_admin_routes
from dissemination.api.guard import ConnectionGuard, GuardedRunner, guarding
from dissemination.api.ingest import add_ingest_routes
from dissemination.api.lists import add_list_routes
from dissemination.api.progress import ProgressEndpoints, add_progress_routes
from dissemination.api.rulepreview import add_rule_preview_routes
from dissemination.api.sends import SendEndpoints, add_send_routes
from dissemination.api.session import add_session_routes
from dissemination.api.twiliohooks import TwilioHooks, add_twilio_hooks
from dissemination.broker.dispatch import DeliveryDispatcher
from dissemination.console.routes import add_console_routes
from dissemination.intake.release import SendReleaser
from dissemination.ledger.progress import ProgressStore
from dissemination.metrics import Metrics
from dissemination.settings import Settings
from dissemination.store.database import Database

log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Routed:
    """What the routes serve from: the intake's runtime, the directory's admin, the store,
    the delivery dispatcher, the ack signer and the sends' releaser."""

    runtime: Runtime
    admin: Admin
    database: Database
    dispatcher: DeliveryDispatcher
    signer: AckSigner
    releaser: SendReleaser
    clock: Clock
    metrics: Metrics


def application(settings: Settings, routed: Routed) -> web.Application:
    """The application with every route."""
    clock = routed.clock
    database = routed.database
    app = create_app(routed.runtime, settings.http)
    add_ingest_routes(app)
    add_admin_routes(app, routed.admin)
    add_bulk_routes(app)
    add_list_routes(app)
    add_rule_preview_routes(app)
    releaser = routed.releaser
    add_send_routes(
        app, SendEndpoints(releaser.sends, releaser, clock, settings.sends.max_audience)
    )
    add_twilio_hooks(app, TwilioHooks(database, settings, clock, routed.metrics))
    add_ack_routes(app, AckEndpoints(routed.signer, AckStore(database, routed.metrics), clock))
    add_progress_routes(app, ProgressEndpoints(ProgressStore(database), clock))
    add_control_routes(app, ControlEndpoints(database, routed.dispatcher, clock))
    signin = SignIn(database, settings.accounts, clock)
    add_session_routes(app, StaffAuth(signin, settings.http.public_url))
    add_account_routes(app, AccountEndpoints(AccountStore(database), settings.accounts, clock))
    add_console_routes(app)
    return app


async def serve_http(
    settings: Settings, routed: Routed, undo: contextlib.AsyncExitStack
) -> web.AppRunner:
    """The application listening, behind the connection guard; how to stop it is pushed
    onto `undo`."""
    guard = ConnectionGuard(
        settings.http.max_connections,
        settings.http.header_timeout_seconds,
        settings.http.body_timeout_seconds,
    )
    http = GuardedRunner(application(settings, routed), guard, access_log=None)
    await http.setup()
    undo.push_async_callback(http.cleanup)
    undo.push_async_callback(await guarding(guard))
    await web.TCPSite(http, settings.http.host, settings.http.port).start()
    for address in http.addresses:  # as bound: port 0 becomes the port the system chose
        log.info("http_listening", address=host_port(address))
    return http


def host_port(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """An address as `host:port`, an IPv6 host in brackets."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
