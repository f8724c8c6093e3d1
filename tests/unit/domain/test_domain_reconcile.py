"""Reconciliation of our books with Stripe's and the ledger, on data built by hand."""

from __future__ import annotations

from dataclasses import replace

from paystream.domain.reconcile import (
    Books,
    DriftKind,
    OurPayment,
    OurRefund,
    StripeIntent,
    StripeRefund,
    reconcile,
)
from paystream.domain.status import PaymentStatus as P
from paystream.domain.status import RefundStatus as R

M = "acct_m"


def pay(pid: str, status: P = P.SUCCEEDED, amount: int = 1000) -> OurPayment:
    return OurPayment(pid, M, status, amount, "usd", f"pi_{pid}")


def intent(pid: str | None, status: str = "succeeded", amount: int = 1000,
           pi_id: str | None = None) -> StripeIntent:
    return StripeIntent(pi_id or f"pi_{pid}", status, amount, "usd", pid)


def clean() -> Books:
    payments = {p.id: p for p in (pay("a"), pay("b"), pay("c", P.FAILED))}
    refunds = {"re_1": OurRefund("re_1", "a", M, R.SUCCEEDED, 300, "usd", "re_s1")}
    return Books(
        payments=payments, refunds=refunds,
        intents=[intent("a"), intent("b"), intent("c", "requires_payment_method")],
        stripe_refunds=[StripeRefund("re_s1", "succeeded", 300, "re_1")],
        journals={("payment", "a"): 1, ("payment", "b"): 1, ("refund", "re_1"): 1},
        balances={(M, "usd"): (1700, 1700)})


def kinds(books: Books) -> dict[DriftKind, list[tuple[str, ...]]]:
    found: dict[DriftKind, list[tuple[str, ...]]] = {}
    for drift in reconcile(books):
        found.setdefault(drift.kind, []).append(drift.ids)
    return found


def test_clean_books_have_no_drift() -> None:
    assert reconcile(clean()) == []


def test_charged_at_stripe_but_pending_here_is_fixed_by_the_guarded_move() -> None:
    books = clean()
    books = replace(books, payments={**books.payments, "a": pay("a", P.PENDING)})
    [drift] = [d for d in reconcile(books) if d.kind is DriftKind.CHARGED_NOT_SUCCEEDED]
    assert drift.ids == ("a", "pi_a")
    assert drift.fix is not None and drift.fix.target is P.SUCCEEDED
    assert drift.fix.stripe_id == "pi_a"


def test_charged_but_canceled_here_needs_a_person() -> None:
    books = clean()
    books = replace(books, payments={**books.payments, "b": pay("b", P.CANCELED)},
                    journals={("payment", "a"): 1, ("refund", "re_1"): 1},
                    balances={(M, "usd"): (700, 700)})
    found = {d.kind: d for d in reconcile(books)}
    assert found[DriftKind.CHARGED_NOT_SUCCEEDED].fix is None
    assert found[DriftKind.INTENT_FOR_UNCHARGEABLE].ids == ("b", "pi_b")


def test_every_other_drift_is_reported_with_its_ids() -> None:
    books = clean()
    books = replace(
        books,
        payments={**books.payments, "d": pay("d")},  # succeeded, never charged
        intents=[intent("a"), intent("b", amount=999), intent("c", "requires_payment_method"),
                 intent("a", pi_id="pi_a2"), intent("ghost")],
        journals={("payment", "a"): 2, ("payment", "b"): 1, ("refund", "re_1"): 1,
                  ("payment", "c"): 1},
        balances={(M, "usd"): (1, 1700)})
    found = kinds(books)
    assert found[DriftKind.SUCCEEDED_NOT_CHARGED] == [("d", "pi_d")]
    assert found[DriftKind.AMOUNT_MISMATCH] == [("b", "pi_b")]
    assert found[DriftKind.DUPLICATE_PAYMENT_INTENTS] == [("a", "pi_a", "pi_a2")]
    assert found[DriftKind.UNKNOWN_PAYMENT_INTENT] == [("pi_ghost",)]
    assert sorted(found[DriftKind.JOURNALS_NOT_ONE]) == [("a",), ("d",)]
    assert found[DriftKind.JOURNAL_WITHOUT_SOURCE] == [("c",)]
    assert found[DriftKind.BALANCE_MISMATCH] == [(M,)]


def test_refunds_drift_both_ways() -> None:
    books = clean()
    pending = OurRefund("re_1", "a", M, R.PENDING, 300, "usd", None)
    found = {d.kind: d for d in reconcile(replace(books, refunds={"re_1": pending},
                                                  journals={("payment", "a"): 1,
                                                            ("payment", "b"): 1}))}
    assert found[DriftKind.REFUNDED_NOT_SUCCEEDED].fix is not None
    assert found[DriftKind.REFUNDED_NOT_SUCCEEDED].ids == ("re_1", "re_s1")
    found = {d.kind: d for d in reconcile(replace(books, stripe_refunds=[]))}
    assert found[DriftKind.REFUND_SUCCEEDED_NOT_REFUNDED].ids == ("re_1",)
