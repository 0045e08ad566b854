"""Every directory page of the console, registered together."""

from __future__ import annotations

from aiohttp import web

from dissemination.console.directory import add_directory_routes
from dissemination.console.listpages import add_list_pages
from dissemination.console.ruleeditor import add_rule_editor_routes


def add_directory_pages(app: web.Application) -> None:
    """Stakeholders, contacts and subscriptions; the rule editor; distribution lists."""
    add_directory_routes(app)
    add_rule_editor_routes(app)
    add_list_pages(app)
