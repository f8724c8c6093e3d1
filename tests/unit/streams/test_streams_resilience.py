"""Circuit breaker, the Stripe request budget and backoff."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams.resilience import CircuitBreaker, CircuitState, RequestBudget, backoff_delay


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # a success in between resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    assert breaker.retry_in() == pytest.approx(1.0)  # the first probe comes soon
    assert breaker.opened_count == 1


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.failure()
    clock.now += 5.0
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()
    assert breaker.state is CircuitState.OPEN and breaker.opened_count == 2
    clock.now += 5.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()


def test_each_failed_probe_doubles_the_wait_up_to_the_reset_and_success_starts_over() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.failure()
    waits = []
    for _ in range(6):  # an outage: every probe fails
        waits.append(breaker.retry_in())
        clock.now += breaker.retry_in()
        assert breaker.allow()
        breaker.failure()
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    clock.now += breaker.retry_in()
    assert breaker.allow()
    breaker.success()  # Stripe is back: the next outage starts with a short wait again
    breaker.failure()
    assert breaker.retry_in() == pytest.approx(1.0)


def test_a_cancelled_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


@pytest.mark.parametrize("attempt", [1, 2, 3, 10, 100])
def test_backoff_is_jittered_between_half_and_all_of_the_capped_exponential(attempt: int) -> None:
    raw = min(60.0, 1.0 * 2 ** (attempt - 1))
    assert backoff_delay(attempt, base=1.0, cap=60.0, rng=lambda: 0.0) == raw / 2
    assert backoff_delay(attempt, base=1.0, cap=60.0, rng=lambda: 1.0) == raw
    assert backoff_delay(0, base=1.0, cap=60.0) == 0.0


async def test_budget_spaces_requests_at_its_rate() -> None:
    budget = RequestBudget(50.0, burst=1.0)
    start = time.monotonic()
    for _ in range(6):
        await budget.take()
    # The first is free, the next five wait 1/50 s each.
    assert time.monotonic() - start >= 5 / 50 * 0.9


async def test_budget_serves_new_payments_before_the_poller() -> None:
    budget = RequestBudget(20.0, burst=1.0)
    await budget.take()  # the bucket is empty now
    served: list[str] = []

    async def take(name: str, background: bool) -> None:
        await budget.take(background=background)
        served.append(name)

    # The poller asked first, yet every foreground request goes before it.
    tasks = [asyncio.create_task(take("poller", True))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(take(f"submit{i}", False)) for i in range(3)]
    await asyncio.gather(*tasks)
    assert served == ["submit0", "submit1", "submit2", "poller"]


async def test_a_429_pauses_every_caller_and_saved_up_budget_is_dropped() -> None:
    budget = RequestBudget(1000.0, burst=100.0)
    budget.pause(0.2)
    start = time.monotonic()
    await asyncio.gather(*(budget.take() for _ in range(3)))
    # Nothing went out during the pause, and the 100 saved tokens were not spent at once.
    assert time.monotonic() - start >= 0.2 * 0.9
    assert budget.pauses == 1


async def test_a_cancelled_caller_takes_no_budget() -> None:
    budget = RequestBudget(10.0, burst=1.0)
    await budget.take()
    gone = asyncio.create_task(budget.take())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert budget.waiting == 0
    await asyncio.wait_for(budget.take(), timeout=5)


def test_budget_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError):
        RequestBudget(0)
