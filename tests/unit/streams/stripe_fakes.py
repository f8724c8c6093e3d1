"""In-memory fakes of the Stripe sequence's ports (streams/stripe_ports.py) and of its clock.

FakeStripe keeps the PaymentIntents and Refunds it made and can be told to fail the way
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
    """Stripe's PaymentIntents and Refunds for the sequence (the StripePort of
    streams/stripe_ports.py)."""

    def __init__(self, clock: FakeTime, *, failure_threshold: int = 3) -> None:
        self._clock = clock
        self.breaker = CircuitBreaker(failure_threshold, 30.0, clock=clock)
        self.budget = RecordingBudget()
        self.intents: dict[str, tuple[str, float]] = {}  # pi id -> (payment id, created)
        self.refunds: dict[str, tuple[str, str]] = {}  # re id -> (refund id, pi id)
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

    def refunds_for(self, refund_id: str) -> list[str]:
        return [re for re, (rid, _) in self.refunds.items() if rid == refund_id]

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
        await self._answered("payment_intent.create")
        return StripeObject(pi, "succeeded")

    async def _answered(self, operation: str) -> None:
        """After Stripe made the object: the answer reaches the caller, or not."""
        if self.hang_after_create:
            await asyncio.Event().wait()  # until the test cancels the caller
        if self.late_answers:
            self.late_answers -= 1
            self.breaker.failure()
            raise StripeUnavailable("TimeoutError: ", operation=operation)
        self.breaker.success()

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
        self.calls.append(Call("create", refund.id, background))
        await self._pay(prepaid, background)
        self._answer_or_fail("refund.create")
        re = f"re_{next(self._ids)}"
        self.refunds[re] = (refund.id, payment_intent_id)
        await self._answered("refund.create")
        return StripeObject(re, "succeeded")

    async def retrieve_refund(self, refund_id: str, *, prepaid: bool = False,
                              background: bool = False) -> StripeObject:
        self.calls.append(Call("retrieve", refund_id, background))
        await self._pay(prepaid, background)
        self._answer_or_fail("refund.retrieve")
        self.breaker.success()
        return StripeObject(refund_id, "succeeded")

    async def find_refund(self, refund_id: str, payment_intent_id: str, *,
                          prepaid: bool = False,
                          background: bool = False) -> StripeObject | None:
        self.calls.append(Call("find", refund_id, background))
        await self._pay(prepaid, background)
        self._answer_or_fail("refund.find")
        self.breaker.success()
        for re, (rid, pi) in self.refunds.items():
            if rid == refund_id and pi == payment_intent_id:
                return StripeObject(re, "succeeded")
        return None


@dataclass
class Submission:
    """A row of stripe_submissions."""

    attempts: int
    lease_until: float | None
    created_at: float
    stripe_id: str | None = None
    unsent_attempts: int = 0
    last_error: str | None = None


# Each object type's Stripe id column (postgres._TABLES).
_STRIPE_COLUMN = {"payment": "stripe_payment_intent_id", "refund": "stripe_refund_id"}


@dataclass
class FakeSubmissions:
    """Payments approved by fraud, refunds, and the leases on submitting them to Stripe
    (the Submissions port)."""

    clock: Callable[[], float]
    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    submissions: dict[tuple[str, str], Submission] = field(default_factory=dict)
    # Every status an object moved to, in order, by id.
    moves: dict[str, list[str]] = field(default_factory=dict)

    def approved_payment(self, payment_id: str) -> dict[str, Any]:
        """A pending payment approved by fraud, as postgres.load_payments reads it."""
        row = {"id": payment_id, "merchant_id": "mer_1", "amount": 1200, "currency": "usd",
               "status": "pending", "customer": "c_1", "payment_method": "pm_card_visa",
               "description": None, "metadata": {}, "amount_refunded": 0,
               "stripe_payment_intent_id": None, "failure_code": None,
               "failure_message": None, "created_at": datetime.fromtimestamp(self.clock(), UTC),
               "approved": True, "score": 0, "rules_hit": []}
        self.rows["payment", payment_id] = row
        self.moves[payment_id] = []
        return dict(row)

    def pending_refund(self, refund_id: str, payment_intent: str | None) -> dict[str, Any]:
        """A pending refund, as postgres.load_refunds reads it (with its payment's
        PaymentIntent)."""
        row = {"id": refund_id, "payment_id": "pay_refunded", "merchant_id": "mer_1",
               "amount": 500, "currency": "usd", "status": "pending", "stripe_refund_id": None,
               "failure_code": None, "failure_message": None,
               "created_at": datetime.fromtimestamp(self.clock(), UTC),
               "payment_intent": payment_intent}
        self.rows["refund", refund_id] = row
        self.moves[refund_id] = []
        return dict(row)

    def row(self, object_id: str, object_type: str = "payment") -> dict[str, Any]:
        return dict(self.rows[object_type, object_id])

    def submission(self, object_id: str, object_type: str = "payment") -> Submission:
        return self.submissions[object_type, object_id]

    async def claim(self, object_type: str, ids: Sequence[str],
                    lease_seconds: float) -> dict[str, Claim]:
        now = self.clock()
        taken: dict[str, Claim] = {}
        for object_id in sorted(set(ids)):
            row = self.rows.get((object_type, object_id))
            if row is None or row["status"] != "pending" \
                    or row[_STRIPE_COLUMN[object_type]] is not None \
                    or (object_type == "payment" and not row["approved"]):
                continue  # no longer claimable (for a payment, the fraud gate too)
            key = (object_type, object_id)
            sub = self.submissions.get(key)
            if sub is None:
                sub = self.submissions[key] = Submission(0, None, now)
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
            key = (item.object_type, item.object_id)
            row = self.rows[key]
            column = _STRIPE_COLUMN[item.object_type]
            moves = item.target is not None and row["status"] in predecessors_for(item.target)
            if moves:
                assert isinstance(item.target, PaymentStatus | RefundStatus)
                row.update(status=item.target.value, **item.columns)
                self.moves[item.object_id].append(item.target.value)
            elif item.stripe_id and row[column] is None:
                row[column] = item.stripe_id
            if item.release:
                sub = self.submissions[key]
                self.submissions[key] = dataclasses.replace(
                    sub, lease_until=None, stripe_id=item.stripe_id or sub.stripe_id,
                    last_error=item.error,
                    unsent_attempts=sub.unsent_attempts + int(item.unsent))
            moved.append(moves)
        return moved

