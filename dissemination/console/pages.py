"""Rendering console pages: one Jinja2 environment over the package's templates, the
context every page shares (the viewer, the form token, the navigation, the session's idle
timeout), TLP badges, and the response headers every page carries (a strict content
security policy: scripts and styles only from our own static files)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from dissemination.api.app import STAFF
from dissemination.api.tokens import Role
from dissemination.console.auth import FORM_TOKEN_FIELD, Viewer

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# (path, label, roles that see it): the navigation, in order
NAVIGATION: tuple[tuple[str, str, frozenset[Role]], ...] = (
    ("/console/", "Board", frozenset(Role)),
    ("/console/approvals", "Approvals", frozenset({Role.APPROVER, Role.ADMIN})),
    ("/console/compose", "Compose", frozenset({Role.PUBLISHER, Role.ADMIN})),
    ("/console/directory", "Directory", frozenset(Role)),
    ("/console/record", "Record", frozenset({Role.ADMIN})),
    ("/console/accounts", "Accounts", frozenset({Role.ADMIN})),
)

TLP_LEVELS = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")


def tlp_badge(tlp: str | None) -> Markup:
    """A TLP label as FIRST draws it: the label as text, coloured on a black box."""
    label = (tlp or "CLEAR").upper().removeprefix("TLP:")
    css = "tlp-" + label.lower().replace("+strict", "-strict")
    return Markup('<span class="tlp {}">TLP:{}</span>').format(css, label)


def when(value: datetime | str | None) -> str:
    """A time as staff read it: UTC, to the second."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


_environment = Environment(
    loader=PackageLoader("dissemination.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters["tlp"] = tlp_badge
_environment.filters["when"] = when
_environment.globals["FORM_TOKEN_FIELD"] = FORM_TOKEN_FIELD


def navigation(viewer: Viewer | None, current: str) -> list[dict[str, Any]]:
    if viewer is None:
        return []
    return [
        {"path": path, "label": label, "current": path == current}
        for path, label, roles in NAVIGATION
        if viewer.may(*roles)
    ]


def render_text(template: str, context: Mapping[str, Any]) -> str:
    """A template rendered to text, with no page around it (fragments, tests)."""
    return _environment.get_template(template).render(**context)


def render(
    request: web.Request,
    template: str,
    viewer: Viewer | None,
    *,
    status: int = 200,
    title: str,
    **context: Any,
) -> web.Response:
    """A console page: `template` with the shared context, as an HTML response."""
    staff = request.app[STAFF]
    idle_seconds = int(staff.signin.timeouts.idle.total_seconds())
    shared = {
        "title": title,
        "viewer": viewer,
        "form_token": viewer.form_token if viewer is not None else "",
        "navigation": navigation(viewer, request.path),
        "idle_seconds": idle_seconds,
        "static": request.app.router["console-static"].url_for,
    }
    body = render_text(template, shared | context)
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
    )
