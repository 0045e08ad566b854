"""The roles a staff account holds. What each lets the account do through the API is mapped
onto the API's token roles in `dissemination.api.principal`."""

from __future__ import annotations

from enum import StrEnum


class AccountRole(StrEnum):
    """administrator manages accounts and the directory; approver decides held alerts;
    analyst composes and sends; viewer reads."""

    ADMINISTRATOR = "administrator"
    APPROVER = "approver"
    ANALYST = "analyst"
    VIEWER = "viewer"
