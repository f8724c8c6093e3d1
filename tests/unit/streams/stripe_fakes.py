"""In-memory fakes of the Stripe sequence's ports (streams/stripe_ports.py) and of its clock.

FakeStripe keeps the PaymentIntents it made and can be told to fail the way
Stripe does: down (every call fails and counts against the breaker), a create
answered too late (made at Stripe, a timeout here), a 429 the gateway gave up
waiting out, a create held open. FakeSubmissions holds the rows and the
``stripe_submissions`` leases with the semantics of postgres.claim_submissions
and postgres.write_back (tests/e2e/streams/test_streams_write_back.py holds
the SQL to them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from paystream.domain import PaymentStatus, RefundStatus, predecessors_for
from streams.adapters.postgres import Claim, WriteBack
from streams.adapters.stripe_gateway import StripeObject
from streams.errors import StripeUnavailable
from streams.resilience import CircuitBreaker, RequestBudget
from streams.rows import PaymentRow, RefundRow


class FakeTime:
    """The sequence's clock and sleep: a sleep moves the clock at once, records how long
    it was, and (``hold``) waits for the test to let it end."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.waits: list[float] = []
        self.sleeping = asyncio.Event()
        self.hold: asyncio.Event | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        self.sleeping.set()
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(0)


class RecordingBudget(RequestBudget):
    """A budget that never runs out and records which share paid for each request
    (one entry per token: as many as requests when each was paid for once)."""

    def __init__(self) -> None:
        super().__init__(rate=1_000_000.0)
        self.lanes: list[str] = []

    async def take(self, *, background: bool = False) -> None:
        self.lanes.append("background" if background else "foreground")
        await super().take(background=background)


@dataclass
class Call:
    operation: str  # create, retrieve, find
    object_id: str
    background: bool


class FakeStripe:
    """Stripe's PaymentIntents for the sequence (the StripePort of streams/stripe_ports.py)."""

    def __init__(self, clock: FakeTime, *, failure_threshold: int = 3) -> None:
        self._clock = clock
        self.breaker = CircuitBreaker(failure_threshold, 30.0, clock=clock)
        self.budget = RecordingBudget()
        self.intents: dict[str, tuple[str, float]] = {}  # pi id -> (payment id, created)
        self.calls: list[Call] = []
        self._ids = itertools.count(1)
        self.down = False
        self.late_answers = 0  # creates that succeed at Stripe but time out here
        self.rate_limited = 0  # calls refused by 429s for longer than the gateway waits
        self.hold_creates: asyncio.Event | None = None  # a create waits for it
        self.create_entered = asyncio.Event()
        self.hang_after_create = False  # the caller dies after Stripe made the intent

    def intents_for(self, payment_id: str) -> list[str]:
        return [pi for pi, (pid, _) in self.intents.items() if pid == payment_id]

    def creates(self) -> list[Call]:
        return [c for c in self.calls if c.operation == "create"]

    async def _pay(self, prepaid: bool, background: bool) -> None:
        # As the gateway does: a request the caller did not pay for takes its own token.
        if not prepaid:
            await self.budget.take(background=background)

    def until_next_try(self, tries: int) -> float:
        return self.breaker.retry_in() + 1.0

    def _answer_or_fail(self, operation: str) -> None:
        if not self.breaker.allow():
            raise StripeUnavailable("circuit open", operation=operation, unsent=True)
        if self.rate_limited:
            self.rate_limited -= 1
            self.breaker.release()  # a 429 says nothing about Stripe's health
            raise StripeUnavailable("rate limited 3 times in a row", operation=operation,
                                    code="rate_limit", unsent=True)
        if self.down:
            self.breaker.failure()
            raise StripeUnavailable("APIConnectionError: connection refused",
                                    operation=operation)

    async def create_payment_intent(self, payment: PaymentRow, *, prepaid: bool = False,
                                    background: bool = False) -> StripeObject:
        self.calls.append(Call("create", payment.id, background))
        await self._pay(prepaid, background)
        self.create_entered.set()
        if self.hold_creates is not None:
            await self.hold_creates.wait()
        self._answer_or_fail("payment_intent.create")
        pi = f"pi_{next(self._ids)}"
        self.intents[pi] = (payment.id, self._clock())
        if self.hang_after_create:
            await asyncio.Event().wait()  # until the test cancels the caller
        if self.late_answers:
            self.late_answers -= 1
            self.breaker.failure()
            raise StripeUnavailable("TimeoutError: ", operation="payment_intent.create")
        self.breaker.success()
        return StripeObject(pi, "succeeded")

    async def retrieve_payment_intent(self, pi_id: str, *, prepaid: bool = False,
                                      background: bool = False) -> StripeObject:
        self.calls.append(Call("retrieve", pi_id, background))
        await self._pay(prepaid, background)
        self._answer_or_fail("payment_intent.retrieve")
        self.breaker.success()
        return StripeObject(pi_id, "succeeded")

    async def find_payment_intent(self, payment_id: str, *, since: float,
                                  prepaid: bool = False,
                                  background: bool = False) -> StripeObject | None:
        self.calls.append(Call("find", payment_id, background))
        await self._pay(prepaid, background)
        self._answer_or_fail("payment_intent.find")
        self.breaker.success()
        for pi, (pid, created) in self.intents.items():
            if pid == payment_id and created >= since:
                return StripeObject(pi, "succeeded")
        return None

    async def create_refund(self, refund: RefundRow, payment_intent_id: str, *,
                            prepaid: bool = False, background: bool = False) -> StripeObject:
        raise NotImplementedError("these tests submit payments")

    async def retrieve_refund(self, refund_id: str, *, prepaid: bool = False,
                              background: bool = False) -> StripeObject:
        raise NotImplementedError("these tests submit payments")

    async def find_refund(self, refund_id: str, payment_intent_id: str, *,
                          prepaid: bool = False,
                          background: bool = False) -> StripeObject | None:
        raise NotImplementedError("these tests submit payments")


@dataclass
class Submission:
    """A row of stripe_submissions."""

    attempts: int
    lease_until: float | None
    created_at: float
    stripe_id: str | None = None
    unsent_attempts: int = 0
    last_error: str | None = None


@dataclass
class FakeSubmissions:
    """Payments approved by fraud, and the leases on submitting them (the Submissions port)."""

    clock: Callable[[], float]
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: dict[str, Submission] = field(default_factory=dict)
    # Every status a payment moved to, in order.
    moves: dict[str, list[str]] = field(default_factory=dict)

    def approved_payment(self, payment_id: str) -> dict[str, Any]:
        """A pending payment approved by fraud, as postgres.load_payments reads it."""
        row = {"id": payment_id, "merchant_id": "mer_1", "amount": 1200, "currency": "usd",
               "status": "pending", "customer": "c_1", "payment_method": "pm_card_visa",
               "description": None, "metadata": {}, "amount_refunded": 0,
               "stripe_payment_intent_id": None, "failure_code": None,
               "failure_message": None, "created_at": datetime.fromtimestamp(self.clock(), UTC),
               "approved": True, "score": 0, "rules_hit": []}
        self.payments[payment_id] = row
        self.moves[payment_id] = []
        return dict(row)

    def row(self, payment_id: str) -> dict[str, Any]:
        return dict(self.payments[payment_id])

    async def claim(self, object_type: str, ids: Sequence[str],
                    lease_seconds: float) -> dict[str, Claim]:
        assert object_type == "payment"
        now = self.clock()
        taken: dict[str, Claim] = {}
        for object_id in sorted(set(ids)):
            row = self.payments.get(object_id)
            if row is None or row["status"] != "pending" or not row["approved"] \
                    or row["stripe_payment_intent_id"] is not None:
                continue  # no longer claimable
            sub = self.submissions.get(object_id)
            if sub is None:
                sub = self.submissions[object_id] = Submission(0, None, now)
            elif sub.lease_until is not None and sub.lease_until >= now:
                continue  # leased by another caller
            sub.attempts += 1
            sub.lease_until = now + lease_seconds
            taken[object_id] = Claim(sub.attempts, sub.stripe_id, sub.created_at,
                                     sub.unsent_attempts)
        return taken

    async def write_back(self, items: Sequence[WriteBack]) -> list[bool]:
        moved: list[bool] = []
        for item in items:
            assert item.object_type == "payment"
            row = self.payments[item.object_id]
            moves = item.target is not None and row["status"] in predecessors_for(item.target)
            if moves:
                assert isinstance(item.target, PaymentStatus | RefundStatus)
                row.update(status=item.target.value, **item.columns)
                self.moves[item.object_id].append(item.target.value)
            elif item.stripe_id and row["stripe_payment_intent_id"] is None:
                row["stripe_payment_intent_id"] = item.stripe_id
            if item.release:
                sub = self.submissions[item.object_id]
                self.submissions[item.object_id] = dataclasses.replace(
                    sub, lease_until=None, stripe_id=item.stripe_id or sub.stripe_id,
                    last_error=item.error,
                    unsent_attempts=sub.unsent_attempts + int(item.unsent))
            moved.append(moves)
        return moved

