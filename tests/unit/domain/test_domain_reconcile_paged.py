"""Reconciliation a case at a time, the --merchant scope, and the worker's incremental schedule."""

from __future__ import annotations

from collections import Counter

from paystream.domain.reconcile import (
    TALLY_STEP_SECONDS,
    DriftKind,
    DriftTally,
    OurPayment,
    OurRefund,
    Pass,
    PaymentCase,
    Schedule,
    StripeIntent,
    StripeRefund,
    advance,
    compare_payment,
    compare_refund,
    in_merchant_scope,
    plan_passes,
)
from paystream.domain.status import PaymentStatus as P
from paystream.domain.status import RefundStatus as R

M = "acct_m"
HOUR = 3600.0
DAY = 24 * HOUR


def pay(pid: str, status: P = P.SUCCEEDED, merchant: str = M) -> OurPayment:
    return OurPayment(pid, merchant, status, 1000, "usd", f"pi_{pid}")


def intent(pid: str | None, status: str = "succeeded", *, pi_id: str | None = None,
           merchant: str | None = None, refund: str | None = None) -> StripeIntent:
    return StripeIntent(pi_id or f"pi_{pid}", status, 1000, "usd", pid, 0.0, merchant, refund)


def kinds(case: PaymentCase) -> list[DriftKind]:
    return [d.kind for d in compare_payment(case)]


def test_a_settled_payment_with_its_intent_and_journal_is_clean() -> None:
    assert compare_payment(PaymentCase("a", pay("a"), [intent("a")], journals=1)) == []
    assert compare_payment(PaymentCase("f", pay("f", P.FAILED),
                                       [intent("f", "requires_payment_method")])) == []


def test_a_succeeded_payment_without_a_charge_is_news_only_when_its_range_was_listed() -> None:
    lone = PaymentCase("a", pay("a"), [], journals=1)
    assert kinds(lone) == [DriftKind.SUCCEEDED_NOT_CHARGED]
    # Read only because a PaymentIntent of the listed range named it: its charge may be
    # older than the range.
    older = PaymentCase("a", pay("a"), [intent("a", "canceled", pi_id="pi_2")], journals=1,
                        charge_expected=False)
    assert kinds(older) == []


def test_every_payment_drift_of_one_case() -> None:
    case = PaymentCase("b", pay("b", P.CANCELED), [intent("b"), intent("b", pi_id="pi_b2")],
                       journals=1)
    assert kinds(case) == [DriftKind.DUPLICATE_PAYMENT_INTENTS,
                           DriftKind.INTENT_FOR_UNCHARGEABLE,
                           DriftKind.CHARGED_NOT_SUCCEEDED,
                           DriftKind.JOURNAL_WITHOUT_SOURCE]
    [ghost] = compare_payment(PaymentCase("x", None, [intent("x")]))
    assert (ghost.kind, ghost.ids) == (DriftKind.UNKNOWN_PAYMENT_INTENT, ("pi_x",))
    assert compare_payment(PaymentCase("x", None, [])) == []


def test_pending_here_and_charged_at_stripe_is_fixable() -> None:
    [drift] = compare_payment(PaymentCase("a", pay("a", P.PROCESSING), [intent("a")]))
    assert drift.kind is DriftKind.CHARGED_NOT_SUCCEEDED
    assert drift.fix is not None and drift.fix.target is P.SUCCEEDED


def test_a_refund_case() -> None:
    ours = OurRefund("re_1", "a", M, R.PENDING, 300, "usd", None)
    [drift] = compare_refund(ours, StripeRefund("re_s", "succeeded", 300, "re_1"))
    assert drift.kind is DriftKind.REFUNDED_NOT_SUCCEEDED and drift.fix is not None
    done = OurRefund("re_1", "a", M, R.SUCCEEDED, 300, "usd", "re_s")
    assert [d.kind for d in compare_refund(done, None, journals=1)] == [
        DriftKind.REFUND_SUCCEEDED_NOT_REFUNDED]
    assert [d.kind for d in compare_refund(done, StripeRefund("re_s", "succeeded", 300,
                                                              "re_1"))] == [
        DriftKind.JOURNALS_NOT_ONE]


def test_merchant_scope_follows_the_objects_named_whatever_the_metadata_says() -> None:
    # Names our merchant's payment, no merchant_id (made by hand in the dashboard).
    assert in_merchant_scope(intent("a"), M, payment_merchant=M, refund_merchant=None)
    # Names our merchant's payment, another merchant_id in its metadata.
    assert in_merchant_scope(intent("a", merchant="acct_other"), M, payment_merchant=M,
                             refund_merchant=None)
    # Names a refund of ours.
    assert in_merchant_scope(intent(None, refund="re_1"), M, payment_merchant=None,
                             refund_merchant=M)
    # Names a payment we do not have: its merchant_id is all there is to go by.
    assert in_merchant_scope(intent("ghost", merchant=M), M, payment_merchant=None,
                             refund_merchant=None)
    # Another merchant's payment, whatever its metadata claims.
    assert not in_merchant_scope(intent("b", merchant=M), M, payment_merchant="acct_other",
                                 refund_merchant=None)


def test_the_tally_replaces_what_a_pass_covers_and_forgets_what_left_the_window() -> None:
    tally = DriftTally()
    step = TALLY_STEP_SECONDS
    first = Pass(0, 10 * step, ledger=True)
    tally.replace(first, [(DriftKind.SUCCEEDED_NOT_CHARGED, 2 * step, 3),
                          (DriftKind.BALANCE_MISMATCH, None, 1),
                          # found by this pass, timed before it: kept inside it
                          (DriftKind.UNKNOWN_PAYMENT_INTENT, -50 * step, 1)])
    assert tally.counts(0) == Counter({DriftKind.SUCCEEDED_NOT_CHARGED: 3,
                                       DriftKind.BALANCE_MISMATCH: 1,
                                       DriftKind.UNKNOWN_PAYMENT_INTENT: 1})
    # A later pass over minutes 0-4 finds them gone; minutes 5-9 are kept.
    tally.replace(Pass(0, 5 * step), [(DriftKind.AMOUNT_MISMATCH, 7 * step, 1)])
    assert tally.counts(0) == Counter({DriftKind.BALANCE_MISMATCH: 1,
                                       DriftKind.AMOUNT_MISMATCH: 1})
    assert tally.counts(20 * step) == Counter({DriftKind.BALANCE_MISMATCH: 1})
    assert tally.by_minute == {}


def test_the_schedule_goes_incrementally_and_rolls_over_the_whole_window() -> None:
    now = 1_000 * DAY
    window, interval, share = DAY, 600.0, 1 / 12
    schedule = Schedule()
    covered: list[Pass] = []
    for run in range(30):
        passes = plan_passes(schedule, now=now, window=window, settle=60, interval=interval,
                             rolling_share=share)
        incremental = [p for p in passes if not p.ledger]
        rolling = [p for p in passes if p.ledger]
        assert len(rolling) == 1
        if run:
            # Exactly what was created since the last run, nothing twice.
            assert [(p.start, p.end) for p in incremental] == [(schedule.done_until,
                                                               schedule.done_until + interval)]
        assert all(p.end - p.start <= window * share for p in rolling)
        covered += passes
        schedule = advance(schedule, passes)
        now += interval
    # Every minute of a day's window was covered by a rolling pass within 13 runs.
    rolled = sorted((p.start, p.end) for p in covered if p.ledger)[:13]
    start = rolled[0][0]
    for (_, end), (next_start, _) in zip(rolled, rolled[1:], strict=False):
        assert next_start <= end
    assert rolled[-1][1] - start >= window - 2 * interval


def test_a_failed_run_is_covered_by_the_next() -> None:
    now = 1_000 * DAY
    schedule = Schedule()
    passes = plan_passes(schedule, now=now, window=DAY, settle=60, interval=600,
                         rolling_share=1 / 12)
    schedule = advance(schedule, passes)
    # The next run fails: the schedule is not advanced, so the one after covers both.
    later = plan_passes(schedule, now=now + 1200, window=DAY, settle=60, interval=600,
                        rolling_share=1 / 12)
    [incremental] = [p for p in later if not p.ledger]
    assert (incremental.start, incremental.end - incremental.start) == (schedule.done_until,
                                                                      1200)
