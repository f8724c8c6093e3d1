"""Circuit breaker, rate limiter and backoff, on a fake clock."""

from __future__ import annotations

import time

import pytest

from streams.resilience import CircuitBreaker, CircuitState, RateLimiter, backoff_delay


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
    assert breaker.retry_in() == pytest.approx(10.0)
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


async def test_rate_limiter_spaces_acquisitions() -> None:
    limiter = RateLimiter(50.0, burst=1.0)
    start = time.monotonic()
    for _ in range(6):
        await limiter.acquire()
    # The first is free, the next five wait 1/50 s each.
    assert time.monotonic() - start >= 5 / 50 * 0.9


def test_rate_limiter_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
