"""A payment's trace from plain facts: the timeline's order, the path's timings, the waits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from paystream.domain.status import PaymentStatus
from paystream.domain.trace import (
    ChangeEvent,
    EntryRow,
    FraudRow,
    InternalMessage,
    JournalRow,
    NotificationRow,
    PaymentRow,
    PendingEntry,
    RefundRow,
    Step,
    StripeIntent,
    SubmissionRow,
    TraceFacts,
    build_trace,
    facts_json,
    waiting_for,
)

T0 = 1_800_000_000.0  # the payment's creation


def ms(seconds: float) -> object:
    """Equal to the millisecond (Kafka and Debezium times are whole milliseconds)."""
    return pytest.approx(seconds, abs=1e-3)
PID = "pay_0123456789abcdefghijklmn"


def payment(status: str = "succeeded", **changes: object) -> PaymentRow:
    row = PaymentRow(id=PID, merchant_id="acct_1", amount=1050, currency="usd", status=status,
                     customer="c_1", payment_method="pm_card_visa", amount_refunded=0,
                     stripe_payment_intent_id="pi_1", failure_code=None, failure_message=None,
                     created_at=T0, updated_at=T0 + 0.300)
    return replace(row, **changes)  # type: ignore[arg-type]


def change(op: str, old: str | None, new: str, *, commit: float, kafka: float,
           offset: int, object_id: str = PID) -> ChangeEvent:
    return ChangeEvent(topic="paystream.public.payments", partition=2, offset=offset,
                       object_id=object_id, op=op, old_status=old, new_status=new,
                       lsn=1000 + offset, tx_id=7, commit_ms=int(commit * 1000),
                       kafka_ms=int(kafka * 1000))


def submission(**changes: object) -> SubmissionRow:
    row = SubmissionRow(object_type="payment", object_id=PID, attempts=1, stripe_id="pi_1",
                        last_error=None, lease_until=None, created_at=T0 + 0.100,
                        updated_at=T0 + 0.250)
    return replace(row, **changes)  # type: ignore[arg-type]


def notification(**changes: object) -> NotificationRow:
    row = NotificationRow(event_id="evt_1", event_type="payment.succeeded", object_id=PID,
                          status="delivered", attempts=1, last_status_code=200,
                          last_error=None, created_at=T0 + 0.400, updated_at=T0 + 0.450,
                          next_attempt_at=T0 + 0.400, delivered_at=T0 + 0.450)
    return replace(row, **changes)  # type: ignore[arg-type]


def succeeded_facts() -> TraceFacts:
    return TraceFacts(
        payment=payment(),
        now=T0 + 10,
        fraud=FraudRow(approved=True, score=0, rules_hit=(), decided_at=T0 + 0.080),
        submissions=(submission(),),
        journals=(JournalRow(f"jrn_payment_{PID}", "payment", PID, T0 + 0.350, (
            EntryRow("stripe_clearing:usd", "debit", 1050, "usd"),
            EntryRow("merchant_available:acct_1:usd", "credit", 1050, "usd"))),),
        notifications=(notification(),),
        changes=(change("c", None, "pending", commit=T0 + 0.002, kafka=T0 + 0.050, offset=10),
                 change("u", "pending", "succeeded", commit=T0 + 0.260, kafka=T0 + 0.290,
                        offset=12)),
        messages=(InternalMessage("paystream-fraud-by-customer", 1, 5, "fraud check",
                                  int((T0 + 0.060) * 1000)),),
        intent=StripeIntent("pi_1", "succeeded", 1050, "usd", created=T0, charges=()),
    )


def test_a_succeeded_payment_walks_the_whole_path_in_order_with_the_time_between_steps() -> None:
    trace = build_trace(succeeded_facts())

    assert [leg.step for leg in trace.path] == list(Step)
    at = {leg.step: leg.at for leg in trace.path}
    assert at[Step.COMMITTED] == ms(T0 + 0.002)   # Debezium's commit time
    assert at[Step.IN_KAFKA] == ms(T0 + 0.050)
    assert at[Step.STATUS_WRITTEN] == ms(T0 + 0.260)  # the commit into succeeded
    assert at[Step.MERCHANT_NOTIFIED] == ms(T0 + 0.450)
    gaps = {leg.step: leg.since_previous for leg in trace.path}
    assert gaps[Step.COMMITTED] is None
    assert gaps[Step.IN_KAFKA] == ms(0.048)
    assert gaps[Step.FRAUD_DECIDED] == ms(0.030)
    assert gaps[Step.STRIPE_ANSWERED] == ms(0.150)
    assert gaps[Step.JOURNAL_POSTED] == ms(0.090)
    assert trace.terminal and trace.waiting_for == () and trace.where == "succeeded: done"


def test_the_timeline_is_in_time_order_and_counts_from_the_creation() -> None:
    trace = build_trace(succeeded_facts())
    times = [h.at for h in trace.timeline]
    assert times == sorted(times)
    body = trace.as_json()
    assert body["start"] == "2027-01-15T08:00:00.000Z"
    # Stripe's whole-second creation time and the commit both sit at the start.
    kinds = [(line["source"], line["what"]) for line in body["timeline"]]
    assert ("kafka", "change event of the payment: insert, pending") in kinds
    assert ("kafka", "change event of the payment: update, pending -> succeeded") in kinds
    cdc = next(line for line in body["timeline"] if line["source"] == "kafka"
               and "succeeded" in line["what"])
    assert cdc["ref"] == {"topic": "paystream.public.payments", "partition": 2, "offset": 12,
                          "op": "u", "lsn": 1012, "tx_id": 7,
                          "commit_ms": int((T0 + 0.260) * 1000),
                          "kafka_ms": int((T0 + 0.290) * 1000)}
    assert cdc["since_start_ms"] == 260
    assert all(line["since_previous_ms"] >= 0 for line in body["timeline"])


def test_a_blocked_payment_never_reaches_stripe_nor_the_ledger() -> None:
    facts = TraceFacts(
        payment=payment("blocked", stripe_payment_intent_id=None, failure_code="fraud_blocked"),
        now=T0 + 5,
        fraud=FraudRow(False, 40, ("amount_limit",), T0 + 0.05),
        notifications=(notification(event_type="payment.blocked"),),
    )
    trace = build_trace(facts)
    notes = {leg.step: leg.note for leg in trace.path}
    assert notes[Step.STRIPE_CALLED] == "not applicable (blocked)"
    assert notes[Step.JOURNAL_POSTED] == "not applicable (blocked)"
    assert notes[Step.FRAUD_DECIDED] == "blocked: amount_limit"
    assert notes[Step.IN_KAFKA] == "Kafka not read"
    # Without the change events, the row's last update is when the status was written.
    assert {leg.step: leg.at for leg in trace.path}[Step.STATUS_WRITTEN] == T0 + 0.300
    assert trace.waiting_for == () and trace.where == "blocked: done"


def test_after_a_refund_the_status_time_comes_from_the_stripe_answer_not_the_row() -> None:
    facts = replace(succeeded_facts(), changes=None, refunds=(
        RefundRow("re_1", 300, "usd", "succeeded", None, T0 + 1, T0 + 1.2),),
        payment=payment(amount_refunded=300, updated_at=T0 + 1.3))
    leg = next(leg for leg in build_trace(facts).path if leg.step is Step.STATUS_WRITTEN)
    assert leg.at == T0 + 0.250 and leg.note.startswith("approx.")
    # The refund's journal is still to come.
    assert waiting_for(facts) == ("the ledger journal of refund re_1",)


@pytest.mark.parametrize(("facts", "expected"), [
    (TraceFacts(payment("pending"), now=T0 + 1, changes=()),
     "Debezium: the insert has not reached Kafka"),
    (TraceFacts(payment("pending"), now=T0 + 1), "the fraud decision"),
    (TraceFacts(payment("pending"), now=T0 + 1, fraud=FraudRow(True, 0, (), T0)),
     "its turn in the Stripe sequence"),
    (TraceFacts(payment("pending"), now=T0 + 1, fraud=FraudRow(True, 0, (), T0),
                submissions=(submission(stripe_id=None, lease_until=T0 + 30),)),
     "Stripe's answer to attempt 1 (lease until 2027-01-15T08:00:30.000Z)"),
    (TraceFacts(payment("pending"), now=T0 + 100, fraud=FraudRow(True, 0, (), T0),
                submissions=(submission(stripe_id=None, lease_until=T0 + 30,
                                        last_error="rate_limited"),),
                pending=PendingEntry("pending", 2, T0, next_poll_at=T0 + 160)),
     "the poller to retry Stripe (at 2027-01-15T08:02:40.000Z, in 60.0 s) "
     "(last error: rate_limited)"),
    (TraceFacts(payment("requires_action"), now=T0 + 1,
                pending=PendingEntry("requires_action", 0, T0, next_poll_at=T0 + 601)),
     "the customer to complete 3-D Secure at Stripe; then Stripe's webhook, or the "
     "poller's next look (at 2027-01-15T08:10:01.000Z, in 10 min)"),
    (TraceFacts(payment("processing"), now=T0 + 1),
     "Stripe to settle the PaymentIntent: its webhook, or the poller's next look"),
])
def test_an_unsettled_payment_says_what_it_waits_for(facts: TraceFacts, expected: str) -> None:
    trace = build_trace(facts)
    assert not trace.terminal
    assert trace.waiting_for[0].startswith(expected), trace.waiting_for
    assert trace.where == f"{facts.payment.status}: waiting for {trace.waiting_for[0]}"


def test_a_terminal_payment_still_waits_for_its_journal_and_its_webhook() -> None:
    facts = replace(succeeded_facts(), journals=(), notifications=(notification(
        status="pending", attempts=2, delivered_at=None, last_error="HTTP 500",
        next_attempt_at=T0 + 8),))
    trace = build_trace(facts)
    assert trace.waiting_for == (
        "the ledger journal of the succeeded payment",
        "delivery of payment.succeeded to the merchant: attempt 2 failed (HTTP 500), "
        "next try at 2027-01-15T08:00:08.000Z",
    )
    assert trace.where == "succeeded (terminal), with follow-ups outstanding"
    notified = next(leg for leg in trace.path if leg.step is Step.MERCHANT_NOTIFIED)
    assert notified.at is None and notified.note == "payment.succeeded pending, 2 attempt(s)"


def test_a_dead_lettered_webhook_waits_for_a_person() -> None:
    facts = replace(succeeded_facts(), notifications=(notification(
        status="failed", attempts=6, delivered_at=None, last_error="HTTP 500"),))
    assert waiting_for(facts) == (
        "a person: payment.succeeded was dead-lettered after 6 attempts (HTTP 500); "
        "`paystream dlq replay` queues it again",)


def test_a_merchant_without_a_webhook_url_is_not_waited_for() -> None:
    facts = replace(succeeded_facts(), notifications=(),
                    payment=payment(merchant_has_webhook=False))
    assert waiting_for(facts) == ()


@pytest.mark.parametrize("status", list(PaymentStatus))
def test_every_status_gets_a_trace(status: PaymentStatus) -> None:
    trace = build_trace(TraceFacts(payment(status.value), now=T0 + 1))
    assert trace.terminal is status.is_terminal
    assert bool(trace.waiting_for) or status.is_terminal
    assert len(trace.path) == len(Step)


def test_facts_render_as_json_with_iso_times_and_unread_sources_as_null() -> None:
    facts = replace(succeeded_facts(), changes=None, messages=None, intent=None)
    body = facts_json(facts)
    assert body["payment"]["created_at"] == "2027-01-15T08:00:00.000Z"
    assert body["fraud_decision"]["decided_at"] == "2027-01-15T08:00:00.080Z"
    assert body["journals"][0]["entries"][0] == {
        "account": "stripe_clearing:usd", "direction": "debit", "amount": 1050,
        "currency": "usd"}
    assert body["stripe_submissions"][0]["lease_until"] is None
    assert body["change_events"] is None and body["stripe_payment_intent"] is None
