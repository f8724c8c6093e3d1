"""What each error of the Stripe SDK means: for the breaker, the metrics and our caller.

One table, read top to bottom, first match wins (subclasses before their bases).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import stripe

from streams.errors import StripeRejected, StripeUnavailable


class Health(Enum):
    """What an answer says about Stripe's health, for the circuit breaker."""

    HEALTHY = "healthy"  # Stripe answered, even if it refused (a decline is an answer)
    FAILING = "failing"  # counts towards opening the breaker
    UNKNOWN = "unknown"  # says nothing about Stripe: the breaker is left as it is


class RateLimited(Exception):
    """A 429: backpressure, waited out by the gateway, never an outage."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Meaning:
    outcome: str  # the label of paystream_stripe_calls_total
    health: Health
    # The exception our caller gets, from the SDK's error and the operation.
    raise_as: Callable[[Any, str], Exception]
    logged: bool = False  # also logged as an error: someone must look at it


def short(err: BaseException) -> str:
    # Stripe's messages never contain the API key, but keep them one line and short.
    return " ".join(str(err).split())[:300]


def retry_after(err: stripe.StripeError) -> float | None:
    """Seconds from a Retry-After header (Stripe's limiter may send one), if any."""
    raw = (err.headers or {}).get("Retry-After") or (err.headers or {}).get("retry-after")
    try:
        return min(60.0, max(0.0, float(raw))) if raw is not None else None
    except ValueError:
        return None


def _declined(err: stripe.CardError, operation: str) -> StripeRejected:
    error = err.error
    pi = getattr(error, "payment_intent", None) if error is not None else None
    return StripeRejected(err.user_message or "card declined", operation=operation,
                          code=err.code or "card_declined", stripe_id=pi["id"] if pi else None)


def _unavailable(err: Exception, operation: str) -> StripeUnavailable:
    return StripeUnavailable(f"{type(err).__name__}: {short(err)}", operation=operation)


_TABLE: tuple[tuple[type[Exception], Meaning], ...] = (
    (stripe.CardError, Meaning("declined", Health.HEALTHY, _declined)),
    (stripe.RateLimitError, Meaning(
        "rate_limited", Health.UNKNOWN, lambda err, _: RateLimited(short(err), retry_after(err)))),
    (stripe.InvalidRequestError, Meaning(
        "rejected", Health.HEALTHY,
        lambda err, op: StripeRejected(short(err), operation=op,
                                       code=err.code or "invalid_request"))),
    (stripe.APIConnectionError, Meaning("error", Health.FAILING, _unavailable)),
    (asyncio.TimeoutError, Meaning("error", Health.FAILING, _unavailable)),
)
# Any other SDK error: a 5xx (or no status) is an outage worth retrying; a bad key
# or a refused permission says nothing about Stripe's health.
_SERVER_ERROR = Meaning("error", Health.FAILING, _unavailable)
_REFUSED = Meaning("refused", Health.UNKNOWN, _unavailable, logged=True)


def meaning(err: Exception) -> Meaning | None:
    """What err means, or None for an error that is not Stripe's (re-raised as is)."""
    for kind, found in _TABLE:
        if isinstance(err, kind):
            return found
    if isinstance(err, stripe.StripeError):
        return _SERVER_ERROR if (err.http_status or 500) >= 500 else _REFUSED
    return None
