"""Reconciliation: where our payments, refunds and ledger disagree with Stripe or each other.

Pure: it takes what was read (our rows, Stripe's objects, journal counts,
balances) and returns every drift with the ids involved, and for each whether
a guarded transition our state machine allows would resolve it (``fix``), or
a person must look. The comparison is per case (one payment with the
PaymentIntents naming it, one refund with Stripe's), so a caller can read the
books a page at a time and never hold a whole window; ``reconcile`` runs it over
books read whole. ``DriftTally`` and ``plan_passes`` are the worker's
incremental schedule.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .status import (
    PaymentStatus,
    RefundStatus,
    allowed_predecessors,
    map_stripe_payment_intent_status,
    map_stripe_refund_status,
)


class DriftKind(StrEnum):
    CHARGED_NOT_SUCCEEDED = "charged_not_succeeded"
    SUCCEEDED_NOT_CHARGED = "succeeded_not_charged"
    AMOUNT_MISMATCH = "amount_mismatch"
    UNKNOWN_PAYMENT_INTENT = "unknown_payment_intent"
    INTENT_FOR_UNCHARGEABLE = "intent_for_unchargeable_payment"
    DUPLICATE_PAYMENT_INTENTS = "duplicate_payment_intents"
    REFUNDED_NOT_SUCCEEDED = "refunded_not_succeeded"
    REFUND_SUCCEEDED_NOT_REFUNDED = "refund_succeeded_not_refunded"
    JOURNALS_NOT_ONE = "journals_not_one"
    JOURNAL_WITHOUT_SOURCE = "journal_without_source"
    BALANCE_MISMATCH = "balance_mismatch"


@dataclass(frozen=True, slots=True)
class OurPayment:
    id: str
    merchant_id: str
    status: PaymentStatus
    amount: int
    currency: str
    stripe_id: str | None


@dataclass(frozen=True, slots=True)
class OurRefund:
    id: str
    payment_id: str
    merchant_id: str
    status: RefundStatus
    amount: int
    currency: str
    stripe_id: str | None


@dataclass(frozen=True, slots=True)
class StripeIntent:
    id: str
    status: str
    amount: int
    currency: str
    payment_id: str | None  # metadata.payment_id
    created: float = 0.0
    merchant_id: str | None = None  # metadata.merchant_id
    refund_id: str | None = None  # metadata.refund_id


@dataclass(frozen=True, slots=True)
class StripeRefund:
    id: str
    status: str
    amount: int
    refund_id: str | None  # metadata.refund_id


@dataclass(frozen=True, slots=True)
class Fix:
    """A guarded transition that resolves a drift: ``object_type`` moves to ``target``."""

    object_type: str  # "payment" | "refund"
    object_id: str
    target: PaymentStatus | RefundStatus
    stripe_id: str


@dataclass(frozen=True, slots=True)
class Drift:
    kind: DriftKind
    ids: tuple[str, ...]
    detail: str
    fix: Fix | None = None


@dataclass(frozen=True, slots=True)
class Books:
    """What was read: our side, Stripe's side, and the ledger's."""

    payments: Mapping[str, OurPayment]
    refunds: Mapping[str, OurRefund]
    intents: Iterable[StripeIntent]
    stripe_refunds: Iterable[StripeRefund]
    # Journals per (source_type, source_id), and journals whose source is missing.
    journals: Mapping[tuple[str, str], int]
    # (merchant, currency) -> (what the ledger says we owe, succeeded minus refunded)
    balances: Mapping[tuple[str, str], tuple[int, int]]


def _fix_to(object_type: str, object_id: str, current: PaymentStatus | RefundStatus,
            target: PaymentStatus | RefundStatus, stripe_id: str) -> Fix | None:
    return Fix(object_type, object_id, target, stripe_id) \
        if current in allowed_predecessors(target) else None


@dataclass(frozen=True, slots=True)
class PaymentCase:
    """One payment id with every PaymentIntent naming it, and its journals.

    ``payment`` is None when we have no such payment. ``charge_expected``: False when
    Stripe was listed over a range that need not hold the payment's PaymentIntent (the
    payment was created before it), so not finding a succeeded one there is not news."""

    payment_id: str
    payment: OurPayment | None
    intents: Sequence[StripeIntent]
    journals: int = 0
    charge_expected: bool = True


def compare_payment(case: PaymentCase) -> list[Drift]:
    """The drifts of one payment against the PaymentIntents naming it, and its journal."""
    payment, intents, payment_id = case.payment, case.intents, case.payment_id
    ids = tuple(pi.id for pi in intents)
    if payment is None:
        return [Drift(DriftKind.UNKNOWN_PAYMENT_INTENT, ids,
                      f"names payment {payment_id or '(none)'}, which we do not have")] \
            if intents else []
    drifts: list[Drift] = []
    if len(intents) > 1:
        drifts.append(Drift(DriftKind.DUPLICATE_PAYMENT_INTENTS, (payment_id, *ids),
                            f"{len(intents)} PaymentIntents for one payment"))
    if intents and payment.status in (PaymentStatus.BLOCKED, PaymentStatus.CANCELED):
        drifts.append(Drift(DriftKind.INTENT_FOR_UNCHARGEABLE, (payment_id, *ids),
                            f"the payment is {payment.status.value}"))
    for pi in intents:
        if (pi.amount, pi.currency.lower()) != (payment.amount, payment.currency.lower()):
            drifts.append(Drift(DriftKind.AMOUNT_MISMATCH, (payment_id, pi.id),
                                f"ours {payment.amount} {payment.currency}, Stripe's "
                                f"{pi.amount} {pi.currency}"))
    charged = [pi for pi in intents
               if map_stripe_payment_intent_status(pi.status) is PaymentStatus.SUCCEEDED]
    succeeded = payment.status is PaymentStatus.SUCCEEDED
    if charged and not succeeded:
        drifts.append(Drift(
            DriftKind.CHARGED_NOT_SUCCEEDED, (payment_id, charged[0].id),
            f"Stripe charged it; ours is {payment.status.value}",
            _fix_to("payment", payment_id, payment.status, PaymentStatus.SUCCEEDED,
                    charged[0].id)))
    if succeeded and not charged and case.charge_expected:
        drifts.append(Drift(DriftKind.SUCCEEDED_NOT_CHARGED,
                            (payment_id, *([payment.stripe_id] if payment.stripe_id else [])),
                            "succeeded here, no succeeded PaymentIntent at Stripe"))
    drifts += _journal_drifts("payment", payment_id, succeeded, case.journals)
    return drifts


def compare_refund(refund: OurRefund, theirs: StripeRefund | None,
                   journals: int = 0) -> list[Drift]:
    """The drifts of one refund against Stripe's Refund naming it, and its journal."""
    drifts: list[Drift] = []
    done = theirs is not None and \
        map_stripe_refund_status(theirs.status) is RefundStatus.SUCCEEDED
    succeeded = refund.status is RefundStatus.SUCCEEDED
    if done and not succeeded:
        assert theirs is not None
        drifts.append(Drift(
            DriftKind.REFUNDED_NOT_SUCCEEDED, (refund.id, theirs.id),
            f"Stripe refunded it; ours is {refund.status.value}",
            _fix_to("refund", refund.id, refund.status, RefundStatus.SUCCEEDED, theirs.id)))
    elif succeeded and not done:
        drifts.append(Drift(DriftKind.REFUND_SUCCEEDED_NOT_REFUNDED, (refund.id,),
                            "succeeded here, no succeeded Refund at Stripe"))
    return drifts + _journal_drifts("refund", refund.id, succeeded, journals)


def _journal_drifts(source_type: str, source_id: str, succeeded: bool,
                    journals: int) -> list[Drift]:
    if succeeded and journals != 1:
        return [Drift(DriftKind.JOURNALS_NOT_ONE, (source_id,),
                      f"succeeded {source_type} with {journals} journals")]
    if not succeeded and journals:
        return [Drift(DriftKind.JOURNAL_WITHOUT_SOURCE, (source_id,),
                      f"{journals} journal(s) for a {source_type} that did not succeed")]
    return []


def ledger_drifts(orphan_journals: Mapping[tuple[str, str], int],
                  balances: Mapping[tuple[str, str], tuple[int, int]]) -> list[Drift]:
    """Journals whose source we do not have, and balances that differ from the sums."""
    drifts = [Drift(DriftKind.JOURNAL_WITHOUT_SOURCE, (source_id,),
                    f"{n} journal(s) for a {source_type} that did not succeed")
              for (source_type, source_id), n in sorted(orphan_journals.items()) if n]
    for (merchant, currency), (ledger, sums) in sorted(balances.items()):
        if ledger != sums:
            drifts.append(Drift(DriftKind.BALANCE_MISMATCH, (merchant,),
                                f"{currency}: the ledger owes {ledger}, payments minus "
                                f"refunds say {sums}"))
    return drifts


def in_merchant_scope(intent: StripeIntent, merchant: str, *, payment_merchant: str | None,
                      refund_merchant: str | None) -> bool:
    """Whether a PaymentIntent belongs to a merchant's books: it names one of the
    merchant's payments or refunds, whatever else its metadata says, or it names the
    merchant itself (``payment_merchant``/``refund_merchant``: whose the named objects
    are, None when we do not have them)."""
    return merchant in (payment_merchant, refund_merchant) or (
        payment_merchant is None and refund_merchant is None
        and intent.merchant_id == merchant)


def reconcile(books: Books) -> list[Drift]:
    """Every drift between our books, Stripe's, and the ledger (read whole)."""
    by_payment: dict[str, list[StripeIntent]] = {}
    for pi in books.intents:
        by_payment.setdefault(pi.payment_id or "", []).append(pi)
    cases = [PaymentCase(pid, books.payments.get(pid), intents,
                         books.journals.get(("payment", pid), 0))
             for pid, intents in by_payment.items()]
    cases += [PaymentCase(p.id, p, [], books.journals.get(("payment", p.id), 0))
              for p in books.payments.values() if p.id not in by_payment]
    drifts = [d for case in cases for d in compare_payment(case)]
    by_refund = {r.refund_id: r for r in books.stripe_refunds if r.refund_id}
    drifts += [d for r in books.refunds.values()
               for d in compare_refund(r, by_refund.get(r.id),
                                       books.journals.get(("refund", r.id), 0))]
    known = {("payment", pid) for pid in books.payments} | {
        ("refund", rid) for rid in books.refunds}
    orphans = {k: n for k, n in books.journals.items() if k not in known}
    return drifts + ledger_drifts(orphans, books.balances)


# --- the worker's incremental schedule ---------------------------------------------

# Drift counts are kept per minute of creation time: a pass over a range replaces
# the minutes it covers, so what the worker exports is the latest word on each
# minute of the window, from whichever pass last covered it.
TALLY_STEP_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Pass:
    """A creation-time range [start, end) to reconcile; ``ledger``: also the ledger-wide
    checks (balances, journals without a source), which do not belong to a range."""

    start: float
    end: float
    ledger: bool = False


@dataclass
class DriftTally:
    """The drifts the latest passes found, per minute of creation time, plus those of the
    ledger-wide checks: bounded by the window's minutes, not by its objects."""

    by_minute: dict[int, Counter[DriftKind]] = field(default_factory=dict)
    ledger: Counter[DriftKind] = field(default_factory=Counter)

    def replace(self, done: Pass,
                found: Iterable[tuple[DriftKind, float | None, int]]) -> None:
        """What a pass found (kind, creation time or None for ledger-wide, how many)
        replaces what earlier passes found in its range. A drift's time is clamped into
        the range: a later pass over another range would not see it (a PaymentIntent of
        this range naming an older payment)."""
        first, last = self._minute(done.start), self._minute(done.end)
        for minute in range(first, last):
            self.by_minute.pop(minute, None)
        if done.ledger:
            self.ledger = Counter()
        for kind, at, n in found:
            if at is None:
                self.ledger[kind] += n
                continue
            minute = min(max(self._minute(at), first), max(first, last - 1))
            self.by_minute.setdefault(minute, Counter())[kind] += n

    def counts(self, window_start: float) -> Counter[DriftKind]:
        """Every drift known in the window (older minutes are forgotten)."""
        oldest = self._minute(window_start)
        for minute in [m for m in self.by_minute if m < oldest]:
            del self.by_minute[minute]
        total = Counter(self.ledger)
        for counts in self.by_minute.values():
            total.update(counts)
        return total

    @staticmethod
    def _minute(at: float) -> int:
        return int(at // TALLY_STEP_SECONDS)


@dataclass
class Schedule:
    """What the worker's reconciliation has covered: ``done_until`` (the incremental
    pass's frontier) and ``rolling_at`` (where the slower rolling pass over the whole
    window goes next)."""

    done_until: float | None = None
    rolling_at: float | None = None


def plan_passes(schedule: Schedule, *, now: float, window: float, settle: float,
                interval: float, rolling_share: float) -> list[Pass]:
    """This run's passes: what was created since the last successful run (one interval on
    the first), and the next ``rolling_share`` of the window for the rolling pass, which
    catches what changed after its incremental pass (a PaymentIntent that succeeded
    later). Ranges are on whole minutes, so the tally replaces exactly what was covered."""
    step = TALLY_STEP_SECONDS
    end = math.floor((now - settle) / step) * step
    window_start = math.floor((now - window) / step) * step
    start = schedule.done_until if schedule.done_until is not None else \
        math.floor((end - interval) / step) * step
    start = max(window_start, min(start, end))
    passes = [Pass(start, end)] if end > start else []
    chunk = max(step, math.ceil(window * rolling_share / step) * step)
    rolling = schedule.rolling_at
    if rolling is None or rolling < window_start or rolling >= start:
        rolling = window_start  # a new cycle over the whole window
    passes.append(Pass(rolling, min(rolling + chunk, start), ledger=True))
    return [p for p in passes if p.end > p.start or p.ledger]


def advance(schedule: Schedule, done: Sequence[Pass]) -> Schedule:
    """The schedule after these passes succeeded."""
    done_until, rolling_at = schedule.done_until, schedule.rolling_at
    for p in done:
        if p.ledger:
            rolling_at = p.end
        else:
            done_until = p.end
    return Schedule(done_until, rolling_at)
