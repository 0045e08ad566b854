"""What the accounts room refuses, with an HTTP status and a stable code for the API.

DisseminationError        (core.errors)
 └── AccountRefused       a change, sign-in or enrolment that cannot be made
"""

from __future__ import annotations

from core.errors import DisseminationError


class AccountRefused(DisseminationError):
    """A change, sign-in or enrolment that cannot be made: `status` and `code` for the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
