"""Errors of the delivery channels.

    DisseminationError         (core.errors)
     └── DestinationRejected   a webhook URL or address we will not send to (stable `code`)
    OSError
     └── ForbiddenAddress      every address a webhook host resolves to is forbidden; raised
                               inside aiohttp's resolver, so the send fails as a connection
                               error and is classified permanent

A send never raises for what the destination did: it returns a `SendResult`.
"""

from __future__ import annotations

from core.errors import DisseminationError


class DestinationRejected(DisseminationError):
    """A webhook URL or address that we will not send to; `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ForbiddenAddress(OSError):
    """Every address of the host is one webhooks may not reach."""
