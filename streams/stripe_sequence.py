"""The one Stripe sequence for payments and refunds: lease, look up, create, write back, release.

Used by the submit and refunds agents (``start``: the agent moves on while
Stripe answers) and by the poller (``run``, in the background share of the
budget). Double-charge guards, in order:

- the lease in ``stripe_submissions`` is taken only while the object is still
  claimable (a payment pending, approved by fraud, without a PaymentIntent) and
  nobody else holds it; the request's budget token is taken *before* the lease,
  so a lease never expires while its holder waits for the rate limit;
- a second attempt first looks for what an earlier one may have created (by
  metadata; localstripe ignores Idempotency-Key, real Stripe honours the key
  derived from our id too);
- the answer is written with the guarded UPDATE, so a webhook that got there
  first wins and only the Stripe id is bound.

Claims and write-backs of the objects in flight are coalesced: one round trip
for everything ready at the same moment, not one transaction per object.
Every object is its own task, so a slow answer never holds back another one.

Stripe and the submissions store are ports (stripe_ports.py), so that these
guards are unit-tested against in-memory fakes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faust.types import EventT

from paystream.domain import (
    PaymentStatus,
    RefundStatus,
    map_stripe_payment_intent_status,
    map_stripe_refund_status,
)
from paystream.settings import Settings
from streams import metrics
from streams.adapters.postgres import Claim, WriteBack
from streams.adapters.stripe_gateway import RATE_LIMIT_PATIENCE_SECONDS, StripeObject
from streams.coalesce import Coalescer
from streams.errors import StripeRejected, StripeUnavailable
from streams.handling import Stage
from streams.resilience import CircuitState
from streams.rows import PaymentRow, RefundRow
from streams.stripe_ports import StripePort, Submissions

log = logging.getLogger(__name__)
Row = Mapping[str, Any]
# Our clock against Stripe's when looking up what an earlier attempt created.
CLOCK_SKEW_SECONDS = 5.0


def lease_seconds(settings: Settings) -> float:
    # Long enough for a call to time out and for a run of 429s to be waited out,
    # short enough that a crashed holder's object is picked up soon after.
    return 2 * settings.stripe_timeout_seconds + RATE_LIMIT_PATIENCE_SECONDS + 5


@dataclass(frozen=True)
class Kind:
    """What differs between a payment's PaymentIntent and a refund's Refund."""

    name: str  # stripe_submissions.object_type, pending entries' kind
    stripe_column: str
    # The one mapping from a Stripe object to our move: (target, columns).
    outcome: Callable[[StripeObject], tuple[PaymentStatus | RefundStatus | None,
                                            dict[str, Any]]]
    refused: Callable[[StripeRejected], tuple[PaymentStatus | RefundStatus, dict[str, Any]]]
    # Each call: (gateway, ..., prepaid, background); see StripePort.
    retrieve: Callable[[StripePort, str, bool, bool], Awaitable[StripeObject]]
    find: Callable[[StripePort, Row, float, bool, bool], Awaitable[StripeObject | None]]
    create: Callable[[StripePort, Row, bool, bool], Awaitable[StripeObject]]
    # A reason Stripe must not even be asked (e.g. a refund of an uncharged payment).
    precheck: Callable[[Row], StripeRejected | None]


def _payment_outcome(pi: StripeObject) -> tuple[PaymentStatus, dict[str, Any]]:
    target = map_stripe_payment_intent_status(pi.status)
    columns: dict[str, Any] = {"stripe_payment_intent_id": pi.id}
    if target is PaymentStatus.FAILED:
        columns.update(failure_code=pi.failure_code or "payment_failed",
                       failure_message=pi.failure_message)
    return target, columns


def _payment_refused(rejected: StripeRejected) -> tuple[PaymentStatus, dict[str, Any]]:
    columns: dict[str, Any] = {"failure_code": rejected.code,
                               "failure_message": str(rejected)[:500]}
    if rejected.stripe_id:
        columns["stripe_payment_intent_id"] = rejected.stripe_id
    return PaymentStatus.FAILED, columns


def _payment_precheck(row: Row) -> StripeRejected | None:
    return None  # the claim itself checks the fraud gate


def _refund_outcome(refund: StripeObject) -> tuple[RefundStatus | None, dict[str, Any]]:
    target = map_stripe_refund_status(refund.status)
    if target is RefundStatus.PENDING:
        return None, {}  # nothing to move; the id is bound
    columns: dict[str, Any] = {"stripe_refund_id": refund.id}
    if target is RefundStatus.FAILED:
        columns["failure_code"] = refund.failure_code or "refund_failed"
    return target, columns


def _refund_refused(rejected: StripeRejected) -> tuple[RefundStatus, dict[str, Any]]:
    return RefundStatus.FAILED, {"failure_code": rejected.code,
                                 "failure_message": str(rejected)[:500]}


def _refund_precheck(row: Row) -> StripeRejected | None:
    if row["payment_intent"]:
        return None
    return StripeRejected("The payment has no PaymentIntent to refund.",
                          operation="refund.create", code="payment_not_captured")


PAYMENT = Kind(
    name="payment",
    stripe_column="stripe_payment_intent_id",
    outcome=_payment_outcome,
    refused=_payment_refused,
    retrieve=lambda gw, sid, prepaid, background: gw.retrieve_payment_intent(
        sid, prepaid=prepaid, background=background),
    find=lambda gw, row, since, prepaid, background: gw.find_payment_intent(
        row["id"], since=since - CLOCK_SKEW_SECONDS, prepaid=prepaid, background=background),
    create=lambda gw, row, prepaid, background: gw.create_payment_intent(
        PaymentRow.parse(row), prepaid=prepaid, background=background),
    precheck=_payment_precheck,
)
REFUND = Kind(
    name="refund",
    stripe_column="stripe_refund_id",
    outcome=_refund_outcome,
    refused=_refund_refused,
    retrieve=lambda gw, sid, prepaid, background: gw.retrieve_refund(
        sid, prepaid=prepaid, background=background),
    find=lambda gw, row, since, prepaid, background: gw.find_refund(
        row["id"], row["payment_intent"], prepaid=prepaid, background=background),
    create=lambda gw, row, prepaid, background: gw.create_refund(
        RefundRow.parse(row), row["payment_intent"], prepaid=prepaid, background=background),
    precheck=_refund_precheck,
)


class _Slot:
    """One object's place in the sequence's window, which it can give back while it
    waits and take again (a stop that cancels the wait leaves nothing taken)."""

    def __init__(self, window: asyncio.Semaphore) -> None:
        self._window = window
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._window.release()

    async def take(self) -> None:
        await self._window.acquire()
        self._held = True


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one run did: ``outcome`` names it (metrics, the poller's schedule)."""

    outcome: str
    error: str | None = None


class StripeSequence:
    """Runs the sequence for any number of objects at once, each independently.

    ``stripe`` gives the gateway (made on first use, inside the worker's loop);
    ``clock`` and ``sleep`` time the waits through an outage.
    """

    def __init__(self, settings: Settings, stripe: Callable[[], StripePort],
                 submissions: Submissions, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._settings = settings
        self._stripe = stripe
        self._submissions = submissions
        self._clock = clock
        self._sleep = sleep
        self._active: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._window: asyncio.Semaphore | None = None
        self._claims: dict[str, Coalescer[str, Claim | None]] = {
            kind.name: Coalescer(self._claimer(kind.name)) for kind in (PAYMENT, REFUND)}
        self._writes: Coalescer[WriteBack, bool] = Coalescer(self._write)

    async def start(self, event: EventT[Any], stage: Stage, kind: Kind, row: Row) -> None:
        """Hand one object over and return as soon as it is under way; waits only while
        STRIPE_CONCURRENCY objects are already in the sequence (backpressure)."""
        if self._window is None:
            self._window = asyncio.Semaphore(self._settings.stripe_concurrency)
        await self._window.acquire()
        slot = _Slot(self._window)

        async def run() -> None:
            try:
                await stage.isolate(event, lambda: self.run(kind, row, source=stage.name,
                                                            slot=slot))
            finally:
                slot.release()

        task = asyncio.create_task(run(), name=f"stripe-{row['id']}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Let calls in flight finish for up to a Stripe timeout, then cancel the rest
        (their leases expire and the poller looks again)."""
        grace = self._settings.stripe_timeout_seconds
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in set(self._tasks):
            task.cancel()

    async def run(self, kind: Kind, row: Row, *, source: str, background: bool = False,
                  slot: _Slot | None = None) -> Attempt:
        """The whole sequence for one loaded row: retrieve it if it has a Stripe id,
        else lease and create (after looking for an earlier attempt's) if it may be
        sent, else look it up by metadata. ``background``: in the share of the budget
        no new payment is waiting for, and tried once (the poller); in the foreground
        an outage is waited out. ``slot``: the window slot start() took."""
        object_id = str(row["id"])
        if object_id in self._active:
            return Attempt("in_flight")
        self._active.add(object_id)
        try:
            if row[kind.stripe_column]:
                return await self._refresh(
                    kind, row, source,
                    lambda gw: kind.retrieve(gw, row[kind.stripe_column], False, background))
            if row["status"] == "pending":
                refusal = kind.precheck(row)
                if refusal is not None:
                    return await self._record(kind, object_id, None, refusal, source,
                                              release=False)
                if background:
                    return await self._submit_once(kind, row, source, background=True)
                return await self._submit(kind, row, source, slot)
            return await self._refresh(
                kind, row, source,
                lambda gw: kind.find(gw, row, row["created_at"].timestamp(), False, background))
        finally:
            self._active.discard(object_id)

    async def _submit(self, kind: Kind, row: Row, source: str,
                      slot: _Slot | None) -> Attempt:
        """Submit; in the foreground, an outage is waited out for up to
        STRIPE_OUTAGE_PATIENCE_SECONDS (each try leases again, so a try after a
        timeout first looks for what the one before may have created).

        New payments first: while it waits, an object gives its window slot back,
        so the agent goes on taking new ones in, and its later tries are in the
        background share of the budget, so once Stripe answers again a payment made
        after the outage is not queued behind the outage's backlog.
        """
        give_up_at = self._clock() + self._settings.stripe_outage_patience_seconds
        tries = 0
        background = False
        while True:
            attempt = await self._submit_once(kind, row, source, background=background)
            if attempt.outcome != "stripe_unavailable":
                return attempt
            tries += 1
            wait = self._stripe().until_next_try(tries)
            if self._clock() + wait > give_up_at:
                return attempt  # the poller takes it from here
            if slot is not None:
                slot.release()
            await self._sleep(wait)
            if slot is not None:
                await slot.take()
            background = True

    async def _submit_once(self, kind: Kind, row: Row, source: str, *,
                           background: bool) -> Attempt:
        gateway = self._stripe()
        if gateway.breaker.state is CircuitState.OPEN:
            # Known unavailable: not even a budget token, which a payment made once
            # Stripe is back would otherwise queue behind.
            return Attempt("stripe_unavailable", "circuit open")
        # Pay for the first request before taking the lease (see the module's docstring).
        await gateway.budget.take(background=background)
        claim = await self._claims[kind.name].put(str(row["id"]))
        if claim is None:
            return Attempt("busy")  # leased by another caller, or no longer claimable
        answer: StripeObject | None = None
        try:
            if claim.stripe_id:
                answer = await kind.retrieve(gateway, claim.stripe_id, True, background)
            elif claim.may_have_created:
                # An earlier attempt may have created one and died before writing back.
                # (Without Stripe's search, as on localstripe, a look-up lists every
                # charge since the first attempt: worth skipping when it cannot help.)
                answer = await kind.find(gateway, row, claim.first_attempt_at, True, background)
            if answer is None:
                # The token taken above pays for the create unless a look-up used it.
                prepaid = not claim.stripe_id and not claim.may_have_created
                answer = await kind.create(gateway, row, prepaid, background)
        except StripeRejected as rejected:
            return await self._record(kind, row["id"], None, rejected, source, release=True)
        except StripeUnavailable as err:
            log.info("%s %s stays pending: %s", kind.name, row["id"], err)
            await self._writes.put(WriteBack(kind.name, row["id"], None, {}, None,
                                             release=True, error=str(err), unsent=err.unsent))
            return Attempt("stripe_unavailable", str(err))
        except Exception as err:
            await self._writes.put(WriteBack(kind.name, row["id"], None, {}, None,
                                             release=True, error=f"{type(err).__name__}: {err}"))
            raise
        return await self._record(kind, row["id"], answer, None, source, release=True)

    async def _refresh(self, kind: Kind, row: Row, source: str,
                       ask: Callable[[StripePort], Awaitable[StripeObject | None]]) -> Attempt:
        try:
            answer = await ask(self._stripe())
        except StripeUnavailable as err:
            return Attempt("stripe_unavailable", str(err))
        except StripeRejected as err:
            # e.g. an object Stripe does not know: a read never fails the payment.
            return Attempt("stripe_rejected", f"{err.code}: {err}")
        if answer is None:
            return Attempt("not_found")
        return await self._record(kind, row["id"], answer, None, source, release=False)

    async def _record(self, kind: Kind, object_id: str, answer: StripeObject | None,
                      rejected: StripeRejected | None, source: str, *, release: bool) -> Attempt:
        if answer is not None:
            target, columns = kind.outcome(answer)
            stripe_id: str | None = answer.id
        else:
            assert rejected is not None
            target, columns = kind.refused(rejected)
            stripe_id = rejected.stripe_id
        moved = await self._writes.put(WriteBack(
            kind.name, object_id, target, columns, stripe_id, release=release,
            error=rejected.code if rejected else None))
        if moved and target is not None:
            metrics.TRANSITIONS.labels(kind.name, target.value, source).inc()
        return Attempt("resolved" if moved else "unchanged")

    def _claimer(self, object_type: str
                 ) -> Callable[[Sequence[str]], Awaitable[list[Claim | None]]]:
        async def claim(ids: Sequence[str]) -> list[Claim | None]:
            taken = await self._submissions.claim(object_type, ids,
                                                  lease_seconds(self._settings))
            return [taken.get(i) for i in ids]

        return claim

    async def _write(self, items: Sequence[WriteBack]) -> list[bool]:
        return await self._submissions.write_back(items)

