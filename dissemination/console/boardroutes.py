"""The routes of the board and of an alert's page with its actions."""

from __future__ import annotations

from aiohttp import web

from dissemination.console.alertactions import add_alert_action_routes
from dissemination.console.alertpage import show_alert
from dissemination.console.board import add_board_pages


def add_board_routes(app: web.Application) -> None:
    """The live board at /console/, and each alert's page at /console/alerts/{id}."""
    add_board_pages(app)
    app.router.add_get("/console/alerts/{id}", show_alert, allow_head=False)
    add_alert_action_routes(app)
