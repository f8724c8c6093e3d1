"""HTTP-facing errors, rendered as Stripe-shaped JSON by the one error middleware.

    ApiError                        status, type, code, message, param (keyword-only)
    ├── InvalidRequest              400 invalid_request_error
    │   ├── NotFound                404 invalid_request_error / resource_missing
    │   ├── MethodNotAllowed        405 invalid_request_error / method_not_allowed
    │   └── PayloadTooLarge         413 invalid_request_error / payload_too_large
    ├── AuthenticationFailed        401 authentication_error
    ├── IdempotencyError            400 idempotency_error (same key, other request)
    │   └── IdempotencyKeyInUse     409 idempotency_error / idempotency_key_in_use
    ├── RateLimited                 429 rate_limit_error, with Retry-After
    └── ServiceUnavailable          503 api_error, with Retry-After (primary down)

Everything else is mapped by the ``_ANSWERS`` table that ``error_middleware``
consults: domain errors (paystream.domain.errors) ValidationError -> 400 with
its param and code, InvalidTransition -> 400 ``payment_unexpected_state``; a
database outage -> 503; anything unexpected -> 500 api_error, logged with its
traceback but never with the request's secrets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import psycopg_pool
from aiohttp import web

from api.logs import warn_throttled
from paystream.domain.errors import DomainError, InvalidTransition, ValidationError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answered to the client as ``{"error": {type, code, message, param}}``."""

    status = 500
    type = "api_error"
    default_code = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
            }
        }

    def response(self) -> web.Response:
        return json_response(self.body(), status=self.status, headers=self.headers)


class InvalidRequest(ApiError):
    """The request is malformed or names something that cannot be used."""

    status = 400
    type = "invalid_request_error"
    default_code = "parameter_invalid"


class NotFound(InvalidRequest):
    """No such object for this merchant (another merchant's object is also "missing")."""

    status = 404
    default_code = "resource_missing"


class MethodNotAllowed(InvalidRequest):
    """The path exists but not with this HTTP method."""

    status = 405
    default_code = "method_not_allowed"


class PayloadTooLarge(InvalidRequest):
    """The body is over settings.max_body_bytes."""

    status = 413
    default_code = "payload_too_large"


class AuthenticationFailed(ApiError):
    """No API key, or one that matches no merchant."""

    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class IdempotencyError(ApiError):
    """An Idempotency-Key reused with a different request."""

    status = 400
    type = "idempotency_error"
    default_code = "idempotency_key_reused"


class IdempotencyKeyInUse(IdempotencyError):
    """The first request with this key is still being processed."""

    status = 409
    default_code = "idempotency_key_in_use"


class RateLimited(ApiError):
    """Too many requests for this API key in the current second."""

    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit"


class ServiceUnavailable(ApiError):
    """A dependency the request needs (the primary) cannot be reached; retry later."""

    status = 503
    type = "api_error"
    default_code = "service_unavailable"


def _dumps(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def json_response(
    data: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A compact JSON response (the one encoder every handler uses)."""
    return web.Response(
        text=_dumps(data), status=status, headers=headers, content_type="application/json"
    )


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("Request body is too large.", param="body")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(
            f"Method {exc.method} is not allowed here.",
            headers={"Allow": ",".join(sorted(exc.allowed_methods))},
        )
    if exc.status == 404:
        return NotFound("Unrecognized request URL.", code="resource_missing")
    err = InvalidRequest(exc.reason or "Bad request.", code="invalid_request")
    err.status = exc.status
    return err


def _database_unavailable(err: Exception, request: web.Request) -> ApiError:
    # The primary is down or unreachable: a retry later will work, the request did not.
    warn_throttled(log, "database", "database unavailable (%s on %s %s)",
                   type(err).__name__, request.method, request.path)
    return ServiceUnavailable(
        "The database is unavailable; retry later.",
        code="database_unavailable",
        headers={"Retry-After": "1"},
    )


def _internal(what: str) -> Callable[[Exception, web.Request], ApiError]:
    def logged(err: Exception, request: web.Request) -> ApiError:
        # Only the method and path are logged: headers carry the API key.
        log.exception("%s on %s %s", what, request.method, request.path)
        return ApiError("An internal error occurred.")
    return logged


# What each failure raised below the API is answered with. The nearest class in
# the raised error's MRO wins, so a subclass's entry overrides its base's.
_ANSWERS: dict[type[Exception], Callable[[Any, web.Request], ApiError]] = {
    ApiError: lambda err, _: err,
    ValidationError: lambda err, _: InvalidRequest(err.message, code=err.code, param=err.param),
    InvalidTransition: lambda err, _: InvalidRequest(str(err), code="payment_unexpected_state"),
    web.HTTPException: lambda exc, _: _from_http_exception(exc),
    psycopg_pool.PoolTimeout: _database_unavailable,
    psycopg.OperationalError: _database_unavailable,
    DomainError: _internal("domain invariant broken"),
    Exception: _internal("unhandled error"),
}


def _answer(err: Exception, request: web.Request) -> ApiError:
    cls = next(c for c in type(err).__mro__ if c in _ANSWERS)
    return _ANSWERS[cls](err, request)


CLIENT_CLOSED_REQUEST = 499


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a Stripe-shaped JSON error; no client input yields a 500."""
    try:
        return await handler(request)
    except ConnectionResetError:
        # The client went away mid-request (e.g. a load generator stopping): not
        # our error, and no one will read the answer. 499 as NGINX logs it.
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    except Exception as err:
        if isinstance(err, web.HTTPException) and err.status < 400:
            raise  # a redirect is an answer, not a failure
        return _answer(err, request).response()
