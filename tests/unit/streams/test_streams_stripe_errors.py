"""The table of what Stripe's SDK errors mean: breaker, metric label, our exception."""

from __future__ import annotations

import asyncio

import pytest
import stripe

from streams.adapters.stripe_errors import Health, RateLimited, meaning
from streams.errors import CircuitOpen, StripeRejected, StripeUnavailable


def _card_error() -> stripe.CardError:
    return stripe.CardError("Your card was declined.", None, "card_declined", http_status=402,
                            json_body={"error": {"code": "card_declined",
                                                 "payment_intent": {"id": "pi_1"}}})


@pytest.mark.parametrize(("err", "outcome", "health", "ours"), [
    (_card_error(), "declined", Health.HEALTHY, StripeRejected),
    (stripe.RateLimitError("slow down", http_status=429, headers={"Retry-After": "2"}),
     "rate_limited", Health.UNKNOWN, RateLimited),
    (stripe.InvalidRequestError("No such customer", "customer", code="resource_missing",
                                http_status=400), "rejected", Health.HEALTHY, StripeRejected),
    (stripe.APIConnectionError("connection refused"), "error", Health.FAILING,
     StripeUnavailable),
    (asyncio.TimeoutError(), "error", Health.FAILING, StripeUnavailable),
    (stripe.APIError("boom", http_status=503), "error", Health.FAILING, StripeUnavailable),
    (stripe.AuthenticationError("bad key", http_status=401), "refused", Health.UNKNOWN,
     StripeUnavailable),
    (stripe.PermissionError("not allowed", http_status=403), "refused", Health.UNKNOWN,
     StripeUnavailable),
])
def test_each_sdk_error_has_one_meaning(err: Exception, outcome: str, health: Health,
                                        ours: type[Exception]) -> None:
    found = meaning(err)
    assert found is not None
    assert (found.outcome, found.health) == (outcome, health)
    assert isinstance(found.raise_as(err, "payment_intent.create"), ours)


def test_a_decline_keeps_its_code_and_payment_intent() -> None:
    found = meaning(_card_error())
    assert found is not None
    rejected = found.raise_as(_card_error(), "payment_intent.create")
    assert isinstance(rejected, StripeRejected)
    assert (rejected.code, rejected.stripe_id) == ("card_declined", "pi_1")


def test_a_429_carries_its_retry_after() -> None:
    err = stripe.RateLimitError("slow down", http_status=429, headers={"Retry-After": "2"})
    found = meaning(err)
    assert found is not None
    limited = found.raise_as(err, "payment_intent.create")
    assert isinstance(limited, RateLimited) and limited.retry_after == 2.0


def test_errors_that_are_not_stripes_are_not_mapped() -> None:
    assert meaning(KeyError("x")) is None


def test_only_a_call_that_never_left_is_unsent() -> None:
    assert CircuitOpen(operation="payment_intent.create", retry_in=3.0).unsent
    # A timeout may have reached Stripe: the next attempt must look first.
    found = meaning(asyncio.TimeoutError())
    assert found is not None
    timed_out = found.raise_as(asyncio.TimeoutError(), "payment_intent.create")
    assert isinstance(timed_out, StripeUnavailable) and not timed_out.unsent
