"""The gateway's side of a 429: the whole budget pauses and the call is tried again;
past its patience the object stays pending, and the breaker never hears of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import stripe

from paystream.settings import Settings
from streams.adapters.stripe_gateway import StripeGateway
from streams.errors import StripeUnavailable
from streams.resilience import CircuitBreaker, CircuitState, RequestBudget


@pytest.fixture
async def gateway() -> AsyncIterator[StripeGateway]:
    # Nothing is sent: every call below goes through _call with a function of the test's.
    # A breaker that one failure opens: a 429 counted as one would show.
    made = StripeGateway(Settings.from_env(), budget=RequestBudget(1000.0),
                         breaker=CircuitBreaker(1, 30.0))
    try:
        yield made
    finally:
        await made.close()


def refused_then(refusals: int, retry_after: str) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= refusals:
            raise stripe.RateLimitError("Too many requests", http_status=429,
                                        headers={"Retry-After": retry_after})
        return "pi_1"

    return calls, call


async def test_429s_are_waited_out_and_the_call_answers(gateway: StripeGateway) -> None:
    calls, call = refused_then(2, "0.01")
    assert await gateway._call("payment_intent.create", call) == "pi_1"
    assert len(calls) == 3
    assert gateway.budget.pauses == 2  # every caller waited, not only this one
    assert gateway.breaker.state is CircuitState.CLOSED and gateway.breaker.opened_count == 0


async def test_a_429_longer_than_the_patience_is_unsent_and_not_an_outage(
        gateway: StripeGateway) -> None:
    calls, call = refused_then(1, "60")
    with pytest.raises(StripeUnavailable) as raised:
        await gateway._call("payment_intent.create", call)
    assert (raised.value.code, raised.value.unsent) == ("rate_limit", True)
    assert len(calls) == 1
    assert gateway.breaker.state is CircuitState.CLOSED and gateway.breaker.opened_count == 0
