"""The console's routes, its static files, and how its failures are shown: as pages, not
the API's JSON errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from dissemination.api.errors import ApiError
from dissemination.console.accountpages import add_account_pages
from dissemination.console.approvals import add_approval_routes
from dissemination.console.auth import find_viewer
from dissemination.console.boardroutes import add_board_routes
from dissemination.console.compose import add_compose_routes
from dissemination.console.directorypages import add_directory_pages
from dissemination.console.pages import render
from dissemination.console.recordpages import add_record_routes
from dissemination.console.signin import add_sign_in_routes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONSOLE_PREFIX = "/console/"
STATIC_DIRECTORY = Path(str(resources.files("dissemination.console").joinpath("static")))


@web.middleware
async def console_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A console request that fails gets a page saying why (401: the sign-in page)."""
    if not request.path.startswith(CONSOLE_PREFIX) or request.path.startswith("/console/static/"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as error:
        if error.status == 401:
            raise web.HTTPSeeOther("/console/sign-in") from None
        return await _error_page(request, error.status, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return await _error_page(request, error.status, error.reason)


async def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    try:
        found = await find_viewer(request)
    except ApiError:
        found = None
    return render(
        request, "error.html.j2", found, status=status, title=f"{status}", message=message
    )


async def to_console(_request: web.Request) -> web.Response:
    raise web.HTTPSeeOther(CONSOLE_PREFIX)


def add_console_routes(app: web.Application) -> None:
    """Every console page on `app` (whose staff sign-in is already set up)."""
    app.middlewares.append(console_errors)
    app.router.add_static(
        "/console/static/", STATIC_DIRECTORY, name="console-static", append_version=True
    )
    app.router.add_get("/", to_console, allow_head=False)
    app.router.add_get("/console", to_console, allow_head=False)
    add_board_routes(app)
    add_sign_in_routes(app)
    add_compose_routes(app)
    add_record_routes(app)
    add_account_pages(app)
    add_approval_routes(app)
    add_directory_pages(app)
