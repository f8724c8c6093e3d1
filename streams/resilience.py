"""Circuit breaker, the Stripe request budget and jittered exponential backoff."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calls after ``threshold`` consecutive failures, then lets one probe
    through (half-open) after a wait that starts at ``first_reset_seconds`` and
    doubles with each failed probe up to ``reset_seconds``.

    Success closes the circuit, failure opens it again. A blip costs callers about a
    second, and after an outage of any length the first call that can succeed is
    at most ``reset_seconds`` away, at one probe per ``reset_seconds`` meanwhile.
    Only transient failures count; a card decline is a perfectly healthy answer.
    """

    def __init__(self, threshold: int, reset_seconds: float, *,
                 first_reset_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.first_reset_seconds = min(first_reset_seconds, reset_seconds)
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._wait = self.first_reset_seconds  # before the next probe
        self._probing = False
        self.opened_count = 0

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at >= self._wait:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._wait - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state only one probe at a time."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._wait = self.first_reset_seconds
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing:
            # The probe failed: still out, wait longer before the next one.
            self._wait = min(self.reset_seconds, 2 * self._wait)
        if self._probing or self._failures >= self.threshold:
            if self._opened_at is None or self._probing:
                self.opened_count += 1
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """A probe that ended without telling success from failure (cancelled)."""
        self._probing = False


class RequestBudget:
    """The Stripe account's request rate, shared by every Stripe call of one worker.

    A token bucket at ``rate`` requests per second (bursts up to ``burst``).
    Foreground callers (new payments and refunds) are served first, in order;
    background callers (the poller) get only the tokens no foreground caller is
    waiting for. ``pause`` stops the whole bucket: a 429 is about the account,
    not the one request Stripe refused, so every caller waits out Retry-After.
    """

    def __init__(self, rate: float, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()
        self._paused_until = float("-inf")
        self._waiters: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(), deque())
        self._timer: asyncio.TimerHandle | None = None
        self.pauses = 0

    @property
    def waiting(self) -> int:
        return sum(1 for queue in self._waiters for f in queue if not f.done())

    async def take(self, *, background: bool = False) -> None:
        """Wait for one request's worth of budget."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[1 if background else 0].append(future)
        self._grant()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._tokens += 1  # granted as we were cancelled: give it back
            raise

    def pause(self, seconds: float) -> None:
        """No request for ``seconds`` (Stripe answered 429)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1
        # Whatever was saved up is what Stripe just refused, and nothing
        # accrues while paused: after it the bucket starts empty.
        self._tokens = min(self._tokens, 0.0)
        self._updated = max(self._updated, until)

    def _grant(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock()
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
        if now >= self._paused_until:
            for queue in self._waiters:
                while queue and self._tokens >= 1:
                    future = queue.popleft()
                    if not future.done():
                        future.set_result(None)
                        self._tokens -= 1
        for queue in self._waiters:
            while queue and queue[0].done():
                queue.popleft()
        if any(self._waiters):
            wait = max(self._paused_until - now, (1 - self._tokens) / self.rate, 0.001)
            self._timer = asyncio.get_running_loop().call_later(wait, self._grant)


def backoff_delay(attempt: int, *, base: float, cap: float,
                  rng: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (1-based): base * 2^(attempt-1), capped,
    with "equal jitter" (half fixed, half random) so retries of a burst spread out."""
    if attempt < 1:
        return 0.0
    raw = min(cap, base * float(2 ** min(attempt - 1, 32)))
    return raw / 2 + rng() * raw / 2
