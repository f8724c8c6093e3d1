"""Stripe-shaped errors and the one middleware that maps failures to them (no I/O)."""

from __future__ import annotations

import json
import logging

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from psycopg_pool import PoolTimeout

from api import errors
from api.errors import error_middleware
from paystream.domain.errors import DomainError, InvalidTransition, ValidationError
from paystream.domain.status import PaymentStatus

TREE = {
    errors.InvalidRequest: (400, "invalid_request_error"),
    errors.NotFound: (404, "invalid_request_error"),
    errors.MethodNotAllowed: (405, "invalid_request_error"),
    errors.PayloadTooLarge: (413, "invalid_request_error"),
    errors.AuthenticationFailed: (401, "authentication_error"),
    errors.IdempotencyError: (400, "idempotency_error"),
    errors.IdempotencyKeyInUse: (409, "idempotency_error"),
    errors.RateLimited: (429, "rate_limit_error"),
    errors.ServiceUnavailable: (503, "api_error"),
}


@pytest.mark.parametrize(("cls", "expected"), list(TREE.items()))
def test_every_error_is_stripe_shaped(cls: type[errors.ApiError],
                                      expected: tuple[int, str]) -> None:
    err = cls("Something.", param="p")
    assert issubclass(cls, errors.ApiError)
    assert (err.status, err.type) == expected
    assert err.body() == {"error": {"type": expected[1], "code": err.default_code,
                                    "message": "Something.", "param": "p"}}


def test_the_docstring_tree_names_every_error() -> None:
    doc = errors.__doc__ or ""
    for cls in TREE:
        assert cls.__name__ in doc


async def run(exc: BaseException) -> web.Response:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    request = make_mocked_request("POST", "/v1/payments",
                                  headers={"Authorization": "Bearer sk_secret_value"})
    response = await error_middleware(request, handler)
    assert isinstance(response, web.Response)
    return response


def payload(response: web.Response) -> dict:
    assert response.text is not None
    return json.loads(response.text)["error"]


async def test_domain_validation_error_names_its_param() -> None:
    response = await run(ValidationError("bad", param="amount", code="amount_too_small"))
    assert response.status == 400
    assert payload(response) == {"type": "invalid_request_error", "code": "amount_too_small",
                                 "message": "bad", "param": "amount"}


async def test_invalid_transition_is_a_400() -> None:
    response = await run(InvalidTransition(entity="payment", current=PaymentStatus.SUCCEEDED,
                                           target=PaymentStatus.CANCELED))
    assert response.status == 400
    assert payload(response)["code"] == "payment_unexpected_state"


async def test_aiohttp_errors_become_json() -> None:
    response = await run(web.HTTPNotFound())
    assert (response.status, payload(response)["code"]) == (404, "resource_missing")
    response = await run(web.HTTPMethodNotAllowed("DELETE", ["GET", "POST"]))
    assert response.status == 405
    assert response.headers["Allow"] == "GET,POST"
    response = await run(web.HTTPRequestEntityTooLarge(max_size=10, actual_size=11))
    assert response.status == 413
    assert response.content_type == "application/json"


@pytest.mark.parametrize("exc", [PoolTimeout("no connection"), psycopg.OperationalError("down")])
async def test_database_outage_is_503_with_retry_after(exc: Exception) -> None:
    response = await run(exc)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert payload(response)["type"] == "api_error"


@pytest.mark.parametrize("exc", [RuntimeError("boom"), DomainError("corrupt totals")])
async def test_unexpected_errors_are_500_and_never_log_the_key(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await run(exc)
    assert response.status == 500
    assert payload(response) == {"type": "api_error", "code": "api_error",
                                 "message": "An internal error occurred.", "param": None}
    assert "sk_secret_value" not in caplog.text
    assert "/v1/payments" in caplog.text


async def test_a_client_gone_mid_request_is_499_not_a_logged_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    response = await run(ConnectionResetError("Connection lost"))
    assert response.status == 499
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
