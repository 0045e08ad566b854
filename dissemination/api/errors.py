"""Stable API errors: each has a machine-readable code, an HTTP status and a message, and is
rendered as `{"error": {"code", "message", "details"}}`. Codes never change meaning.

    DisseminationError                  (core.errors)
     └── ApiError          status + code, raised by handlers; `ApiError.from_rejection`
                           answers a RejectedInput with 400 or its reason's status
                           (REASON_STATUS: 413, 415, 422)
    and, turned into ApiError answers by the middleware:
         StoreUnavailable  503 store_unavailable
         HTTPException     its status, with a code from its reason
         a body that cannot be read (its Content-Encoding does not decode, a bad chunk):
                           400 invalid_body
         anything else     500 internal_error, logged with its traceback
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from core.errors import DisseminationError, ErrorDetail, RejectedInput, StoreUnavailable

log = structlog.stdlib.get_logger(__name__)

# RejectedInput reasons that are not plain 400s.
REASON_STATUS = {
    "body_too_large": 413,
    "unsupported_content_type": 415,
    "schema_violation": 422,
    "invalid_handling": 422,
    "unknown_kind": 422,
    "invalid_field": 422,
    "forbidden_destination": 422,
    "unknown_stakeholder": 422,
    "immutable_field": 422,
    "duplicate_contact": 422,
    "too_many_subscriptions": 422,
    "unknown_member": 422,
    "unknown_list": 422,
    "duplicate_list_name": 409,
    "list_cycle": 409,
    "list_in_use": 409,
}

HTTP_STATUS_CODES = {413: "body_too_large", 404: "not_found", 405: "method_not_allowed"}


class ApiError(DisseminationError):
    """An error answer with a stable code."""

    def __init__(
        self, status: int, code: str, message: str, details: Sequence[ErrorDetail] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = tuple(details)

    @classmethod
    def from_rejection(cls, rejected: RejectedInput) -> ApiError:
        status = REASON_STATUS.get(rejected.reason, 400)
        return cls(status, rejected.reason, str(rejected), rejected.errors)

    def response(self) -> web.Response:
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": [d.as_dict() for d in self.details],
            }
        }
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return web.json_response(body, status=self.status, headers=headers, dumps=json.dumps)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SECRET_PATHS = ("/ack/",)


def loggable_path(path: str) -> str:
    """The path without the credential some paths carry (an ack token)."""
    for prefix in SECRET_PATHS:
        if path.startswith(prefix):
            return prefix + "..."
    return path


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON error with a stable code; never a stack trace."""
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except StoreUnavailable:
        return ApiError(
            503, "store_unavailable", "the store is unavailable; retry later"
        ).response()
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = HTTP_STATUS_CODES.get(error.status) or error.reason.lower().replace(" ", "_")
        response = ApiError(error.status, code, error.reason).response()
        if "Allow" in error.headers:  # 405: RFC 9110 requires the methods the resource has
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except (RequestPayloadError, HttpProcessingError):
        return ApiError(400, "invalid_body", "the request body cannot be read").response()
    except Exception:
        log.exception("unhandled_error", method=request.method, path=loggable_path(request.path))
        return ApiError(500, "internal_error", "internal error").response()
