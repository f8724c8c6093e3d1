"""Reconciliation: where our payments, refunds and ledger disagree with Stripe or each other.

Pure: it takes what was read (our rows, Stripe's objects, journal counts,
balances) and returns every drift with the ids involved, and for each whether
a guarded transition our state machine allows would resolve it (``fix``), or
a person must look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


def _payment_drifts(books: Books) -> list[Drift]:
    drifts: list[Drift] = []
    by_payment: dict[str, list[StripeIntent]] = {}
    for pi in books.intents:
        by_payment.setdefault(pi.payment_id or "", []).append(pi)
    for payment_id, intents in by_payment.items():
        payment = books.payments.get(payment_id)
        ids = tuple(pi.id for pi in intents)
        if payment is None:
            drifts.append(Drift(DriftKind.UNKNOWN_PAYMENT_INTENT, ids,
                                f"names payment {payment_id or '(none)'}, which we do not have"))
            continue
        if len(intents) > 1:
            drifts.append(Drift(DriftKind.DUPLICATE_PAYMENT_INTENTS, (payment_id, *ids),
                                f"{len(intents)} PaymentIntents for one payment"))
        if payment.status in (PaymentStatus.BLOCKED, PaymentStatus.CANCELED):
            drifts.append(Drift(DriftKind.INTENT_FOR_UNCHARGEABLE, (payment_id, *ids),
                                f"the payment is {payment.status.value}"))
        for pi in intents:
            if (pi.amount, pi.currency.lower()) != (payment.amount, payment.currency.lower()):
                drifts.append(Drift(DriftKind.AMOUNT_MISMATCH, (payment_id, pi.id),
                                    f"ours {payment.amount} {payment.currency}, Stripe's "
                                    f"{pi.amount} {pi.currency}"))
        charged = [pi for pi in intents
                   if map_stripe_payment_intent_status(pi.status) is PaymentStatus.SUCCEEDED]
        if charged and payment.status is not PaymentStatus.SUCCEEDED:
            drifts.append(Drift(
                DriftKind.CHARGED_NOT_SUCCEEDED, (payment_id, charged[0].id),
                f"Stripe charged it; ours is {payment.status.value}",
                _fix_to("payment", payment_id, payment.status, PaymentStatus.SUCCEEDED,
                        charged[0].id)))
    for payment in books.payments.values():
        if payment.status is not PaymentStatus.SUCCEEDED:
            continue
        charged = [pi for pi in by_payment.get(payment.id, [])
                   if map_stripe_payment_intent_status(pi.status) is PaymentStatus.SUCCEEDED]
        if not charged:
            drifts.append(Drift(DriftKind.SUCCEEDED_NOT_CHARGED,
                                (payment.id, *([payment.stripe_id] if payment.stripe_id else [])),
                                "succeeded here, no succeeded PaymentIntent at Stripe"))
    return drifts


def _refund_drifts(books: Books) -> list[Drift]:
    drifts: list[Drift] = []
    by_refund = {r.refund_id: r for r in books.stripe_refunds if r.refund_id}
    for refund in books.refunds.values():
        theirs = by_refund.get(refund.id)
        done = theirs is not None and \
            map_stripe_refund_status(theirs.status) is RefundStatus.SUCCEEDED
        if done and refund.status is not RefundStatus.SUCCEEDED:
            assert theirs is not None
            drifts.append(Drift(
                DriftKind.REFUNDED_NOT_SUCCEEDED, (refund.id, theirs.id),
                f"Stripe refunded it; ours is {refund.status.value}",
                _fix_to("refund", refund.id, refund.status, RefundStatus.SUCCEEDED, theirs.id)))
        elif refund.status is RefundStatus.SUCCEEDED and not done:
            drifts.append(Drift(DriftKind.REFUND_SUCCEEDED_NOT_REFUNDED, (refund.id,),
                                "succeeded here, no succeeded Refund at Stripe"))
    return drifts


def _ledger_drifts(books: Books) -> list[Drift]:
    drifts: list[Drift] = []
    expected = {("payment", p.id) for p in books.payments.values()
                if p.status is PaymentStatus.SUCCEEDED}
    expected |= {("refund", r.id) for r in books.refunds.values()
                 if r.status is RefundStatus.SUCCEEDED}
    for source in sorted(expected):
        n = books.journals.get(source, 0)
        if n != 1:
            drifts.append(Drift(DriftKind.JOURNALS_NOT_ONE, (source[1],),
                                f"succeeded {source[0]} with {n} journals"))
    for source, n in sorted(books.journals.items()):
        if n and source not in expected:
            drifts.append(Drift(DriftKind.JOURNAL_WITHOUT_SOURCE, (source[1],),
                                f"{n} journal(s) for a {source[0]} that did not succeed"))
    for (merchant, currency), (ledger, sums) in sorted(books.balances.items()):
        if ledger != sums:
            drifts.append(Drift(DriftKind.BALANCE_MISMATCH, (merchant,),
                                f"{currency}: the ledger owes {ledger}, payments minus "
                                f"refunds say {sums}"))
    return drifts


def reconcile(books: Books) -> list[Drift]:
    """Every drift between our books, Stripe's, and the ledger."""
    return _payment_drifts(books) + _refund_drifts(books) + _ledger_drifts(books)
