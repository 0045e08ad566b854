"""The service's own errors, on the base in `core.errors`.

    DisseminationError                     (core.errors)
     ├── ConfigError, RejectedInput,       (core.errors: bad settings, bad input,
     │   StoreUnavailable                   our database failing)
     ├── BrokerUnavailable     RabbitMQ could not be reached at start-up
     ├── PublishFailed         the broker did not confirm a publish: retry, never drop
     ├── SchemaOutOfDate       the database needs `dissemination migrate`
     ├── RecordBroken          the dissemination record cannot be appended to
     ├── TokenRefused          an ack token that does not verify (status: 403, 404, 410)
     ├── TokenNameTaken        an API token by that name exists already
     └── ControlRefused        an approval, release or review that cannot be made
                               (status and a stable code for the API)

The HTTP API turns these into its own error format (`dissemination.api.errors`); the
channels' errors are in `channels.errors`.
"""

from __future__ import annotations

from core.errors import DisseminationError


class PublishFailed(DisseminationError):
    """The broker did not confirm a publish (nacked, unroutable, timed out or disconnected)."""


class BrokerUnavailable(DisseminationError):
    """RabbitMQ could not be reached at start-up; the message says how to start one."""


class SchemaOutOfDate(DisseminationError):
    """The database has not been migrated to the revision this code needs."""


class TokenRefused(DisseminationError):
    """Why a token does not verify; `status` is the HTTP answer (403 tampered, 410 expired)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TokenNameTaken(DisseminationError):
    """An API token by that name exists already (live or revoked): names are unique."""


class RecordBroken(DisseminationError):
    """The dissemination record cannot be appended to (its chain head is gone)."""


class ControlRefused(DisseminationError):
    """An approval, rejection, release or review that cannot be made: `status` and `code`
    for the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
