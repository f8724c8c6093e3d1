"""The Stripe sequence's double-charge guards, against in-memory fakes of its ports.

One PaymentIntent per payment across timeouts and retries, leases between
callers, patience through an outage (slot given back, later tries in the
background share of the budget) and a 429 taken as backpressure; a refund
takes the same path.
"""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from paystream.settings import Settings
from streams.handling import Stage
from streams.resilience import CircuitState
from streams.stripe_sequence import PAYMENT, REFUND, StripeSequence, lease_seconds
from testkit.waiting import eventually
from tests.unit.streams.stripe_fakes import FakeStripe, FakeSubmissions, FakeTime

SETTINGS = dataclasses.replace(Settings.from_env(), stripe_concurrency=8,
                               stripe_outage_patience_seconds=45.0)


@dataclasses.dataclass
class World:
    """One Stripe and one database, shared by every worker's sequence made here."""

    time: FakeTime
    stripe: FakeStripe
    db: FakeSubmissions

    def each_request_paid_once(self) -> bool:
        return len(self.stripe.budget.lanes) == len(self.stripe.calls)

    def sequence(self, settings: Settings = SETTINGS) -> StripeSequence:
        """A worker's sequence (two of them are two workers)."""
        return StripeSequence(settings, lambda: self.stripe, self.db,
                              clock=self.time, sleep=self.time.sleep)


@pytest.fixture
def world() -> World:
    time = FakeTime()
    return World(time, FakeStripe(time), FakeSubmissions(time))


async def made_at_stripe(world: World, payment_id: str) -> list[str]:
    return world.stripe.intents_for(payment_id)


async def moves(world: World, payment_id: str) -> list[str]:
    return world.db.moves[payment_id]


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, event: Any, agent: str, error: BaseException | str) -> None:
        self.sent.append((agent, str(error)))


async def test_a_create_stripe_made_but_answered_too_late_is_found_not_made_again(
        world: World) -> None:
    world.stripe.late_answers = 1
    row = world.db.approved_payment("pay_late")
    attempt = await world.sequence().run(PAYMENT, row, source="submit")
    assert attempt.outcome == "resolved"
    [pi] = world.stripe.intents_for("pay_late")
    assert len(world.stripe.creates()) == 1
    # The second try leased again, knew the first may have created, and looked first.
    assert [c.operation for c in world.stripe.calls] == ["create", "find"]
    assert world.db.submission("pay_late").attempts == 2
    paid = world.db.row("pay_late")
    assert (paid["status"], paid["stripe_payment_intent_id"]) == ("succeeded", pi)
    assert world.each_request_paid_once()


async def test_a_create_that_timed_out_before_stripe_made_anything_is_made_once(
        world: World) -> None:
    world.stripe.down = True
    row = world.db.approved_payment("pay_lost")
    world.time.hold = asyncio.Event()
    running = asyncio.create_task(world.sequence().run(PAYMENT, row, source="submit"))
    await asyncio.wait_for(world.time.sleeping.wait(), timeout=5)
    world.stripe.down = False
    world.time.hold.set()
    assert (await running).outcome == "resolved"
    # It could not know: it looked, found nothing, and only then created.
    assert [c.operation for c in world.stripe.calls] == ["create", "find", "create"]
    assert len(world.stripe.intents_for("pay_lost")) == 1
    assert world.each_request_paid_once()


async def test_after_a_timeout_the_poller_finds_the_intent_the_foreground_made(
        world: World) -> None:
    world.stripe.late_answers = 1
    row = world.db.approved_payment("pay_poll")
    impatient = dataclasses.replace(SETTINGS, stripe_outage_patience_seconds=0.0)
    given_up = await world.sequence(impatient).run(PAYMENT, row, source="submit")
    assert given_up.outcome == "stripe_unavailable"
    assert world.db.row("pay_poll")["status"] == "pending"  # the poller's now
    assert world.db.submission("pay_poll").lease_until is None  # released, not left to expire

    polled = await world.sequence().run(PAYMENT, world.db.row("pay_poll"), source="poller",
                                        background=True)
    assert polled.outcome == "resolved"
    assert len(world.stripe.intents_for("pay_poll")) == 1
    assert len(world.stripe.creates()) == 1
    assert world.stripe.calls[-1].operation == "find" and world.stripe.calls[-1].background
    assert world.stripe.budget.lanes == ["foreground", "background"]
    assert world.each_request_paid_once()


async def test_a_second_caller_cannot_submit_while_the_lease_is_held(world: World) -> None:
    world.stripe.hold_creates = asyncio.Event()
    row = world.db.approved_payment("pay_lease")
    first, second = world.sequence(), world.sequence()
    holder = asyncio.create_task(first.run(PAYMENT, row, source="submit"))
    await asyncio.wait_for(world.stripe.create_entered.wait(), timeout=5)

    assert (await second.run(PAYMENT, row, source="poller", background=True)).outcome == "busy"
    world.stripe.hold_creates.set()
    assert (await holder).outcome == "resolved"
    assert len(world.stripe.creates()) == 1
    assert len(world.stripe.intents_for("pay_lease")) == 1


async def test_an_expired_lease_is_taken_over_and_finds_the_intent_its_holder_made(
        world: World) -> None:
    world.stripe.hang_after_create = True
    row = world.db.approved_payment("pay_crash")
    holder = asyncio.create_task(world.sequence().run(PAYMENT, row, source="submit"))
    await eventually(lambda: made_at_stripe(world, "pay_crash"), timeout=5, interval=0,
                     what="the intent made at Stripe")
    holder.cancel()  # the worker dies before writing the answer back
    with pytest.raises(asyncio.CancelledError):
        await holder
    world.stripe.hang_after_create = False
    other_worker = world.sequence()

    assert (await other_worker.run(PAYMENT, row, source="poller",
                                   background=True)).outcome == "busy"
    world.time.now += lease_seconds(SETTINGS) + 1
    taken_over = await other_worker.run(PAYMENT, row, source="poller", background=True)
    assert taken_over.outcome == "resolved"
    [pi] = world.stripe.intents_for("pay_crash")
    assert len(world.stripe.creates()) == 1
    assert world.db.row("pay_crash")["stripe_payment_intent_id"] == pi
    assert world.db.submission("pay_crash").attempts == 2


async def test_an_open_breaker_is_waited_out_without_a_token_or_a_lease(world: World) -> None:
    for _ in range(3):
        world.stripe.breaker.failure()
    assert world.stripe.breaker.state is CircuitState.OPEN
    row = world.db.approved_payment("pay_open")
    attempt = await world.sequence().run(PAYMENT, row, source="submit")
    assert attempt.outcome == "resolved"
    # One wait, as long as the breaker asked; no budget token nor lease while it was open.
    assert len(world.time.waits) == 1 and world.time.waits[0] >= 1.0
    assert world.stripe.budget.lanes == ["background"]
    assert world.db.submission("pay_open").attempts == 1
    assert [(c.operation, c.background) for c in world.stripe.calls] == [("create", True)]


async def test_an_outage_longer_than_the_patience_leaves_the_payment_to_the_poller(
        world: World) -> None:
    world.stripe.down = True
    row = world.db.approved_payment("pay_down")
    attempt = await world.sequence().run(PAYMENT, row, source="submit")
    assert attempt.outcome == "stripe_unavailable"
    assert sum(world.time.waits) <= SETTINGS.stripe_outage_patience_seconds
    assert world.db.row("pay_down")["status"] == "pending"
    assert world.db.moves["pay_down"] == []
    assert world.db.submission("pay_down").lease_until is None
    # Only the first try was in the foreground share: the rest waited behind new payments.
    assert world.stripe.budget.lanes[0] == "foreground"
    assert set(world.stripe.budget.lanes[1:]) == {"background"}


async def test_while_it_waits_out_an_outage_a_payment_gives_its_slot_to_a_new_one(
        world: World) -> None:
    one_slot = dataclasses.replace(SETTINGS, stripe_concurrency=1)
    sequence = world.sequence(one_slot)
    dead_letters = RecordingDeadLetters()
    stage = Stage("submit", runtime=None, dead_letters=dead_letters)  # type: ignore[arg-type]
    event = SimpleNamespace(message=SimpleNamespace(tp=("t", 0)))
    world.stripe.down = True
    world.time.hold = asyncio.Event()

    old, new = world.db.approved_payment("pay_old"), world.db.approved_payment("pay_new")
    await sequence.start(event, stage, PAYMENT, old)  # type: ignore[arg-type]
    await asyncio.wait_for(world.time.sleeping.wait(), timeout=5)
    world.stripe.down = False
    # The only slot is free again although the old payment is not done.
    await asyncio.wait_for(sequence.start(event, stage, PAYMENT, new),  # type: ignore[arg-type]
                           timeout=5)
    await eventually(lambda: moves(world, "pay_new"), timeout=5, interval=0,
                     what="the new payment resolved")
    world.time.hold.set()
    await eventually(lambda: moves(world, "pay_old"), timeout=5, interval=0,
                     what="the old payment resolved")

    assert [(c.object_id, c.background) for c in world.stripe.creates()] == [
        ("pay_old", False), ("pay_new", False), ("pay_old", True)]
    assert world.db.moves == {"pay_old": ["succeeded"], "pay_new": ["succeeded"]}
    assert dead_letters.sent == []
    await sequence.stop()


async def test_a_429_leaves_the_payment_pending_and_the_retry_creates_without_a_look_up(
        world: World) -> None:
    world.stripe.rate_limited = 1
    row = world.db.approved_payment("pay_429")
    attempt = await world.sequence().run(PAYMENT, row, source="submit")
    assert attempt.outcome == "resolved"
    assert world.db.moves["pay_429"] == ["succeeded"]  # never failed on the way
    assert world.stripe.breaker.state is CircuitState.CLOSED
    assert world.stripe.breaker.opened_count == 0
    # The refused create never reached Stripe, so its retry does not search for it.
    assert [c.operation for c in world.stripe.calls] == ["create", "create"]
    assert world.db.submission("pay_429").unsent_attempts == 1
    assert world.each_request_paid_once()
    assert len(world.stripe.intents_for("pay_429")) == 1


async def test_a_refund_answered_too_late_is_found_not_refunded_twice(world: World) -> None:
    world.stripe.late_answers = 1
    row = world.db.pending_refund("re_late", payment_intent="pi_charged")
    attempt = await world.sequence().run(REFUND, row, source="refunds")
    assert attempt.outcome == "resolved"
    [re] = world.stripe.refunds_for("re_late")
    assert [c.operation for c in world.stripe.calls] == ["create", "find"]
    refunded = world.db.row("re_late", "refund")
    assert (refunded["status"], refunded["stripe_refund_id"]) == ("succeeded", re)
    assert world.each_request_paid_once()


async def test_a_refund_of_a_payment_never_charged_fails_without_asking_stripe(
        world: World) -> None:
    row = world.db.pending_refund("re_uncharged", payment_intent=None)
    attempt = await world.sequence().run(REFUND, row, source="refunds")
    assert attempt.outcome == "resolved"
    refused = world.db.row("re_uncharged", "refund")
    assert (refused["status"], refused["failure_code"]) == ("failed", "payment_not_captured")
    assert world.stripe.calls == [] and world.stripe.budget.lanes == []
