"""Ledger journals: balanced, reversing, idempotent ids, and books that sum to zero."""

from __future__ import annotations

import pytest

from paystream.domain.errors import DomainError, ValidationError
from paystream.domain.ledger import (
    Entry,
    Journal,
    journal_for_payment,
    journal_for_refund,
    merchant_available_account,
    stripe_clearing_account,
)

CLEARING = "stripe_clearing:usd"
MERCHANT = "merchant_available:mer_1:usd"


def test_payment_journal() -> None:
    journal = journal_for_payment("pay_1", "mer_1", 1_050, "USD")
    assert journal.journal_id == "jrn_payment_pay_1"
    assert (journal.source_type, journal.source_id, journal.payment_id) == (
        "payment",
        "pay_1",
        "pay_1",
    )
    assert journal.currency == "usd"
    assert journal.entries == (
        Entry(CLEARING, "debit", 1_050, "usd"),
        Entry(MERCHANT, "credit", 1_050, "usd"),
    )
    assert journal.is_balanced()


def test_refund_journal_reverses_the_payment() -> None:
    payment = journal_for_payment("pay_1", "mer_1", 1_050, "usd")
    refund = journal_for_refund("re_1", "pay_1", "mer_1", 1_050, "usd")
    assert refund.journal_id == "jrn_refund_re_1"
    assert (refund.source_type, refund.source_id, refund.payment_id) == ("refund", "re_1", "pay_1")
    assert refund.is_balanced()
    assert sorted((e.account, e.signed_amount) for e in refund.entries) == sorted(
        (e.account, -e.signed_amount) for e in payment.entries
    )


def test_journal_ids_are_deterministic() -> None:
    assert journal_for_payment("pay_1", "mer_1", 100, "usd") == journal_for_payment(
        "pay_1", "mer_1", 100, "usd"
    )


def post(balances: dict[str, int], journal: Journal) -> dict[str, int]:
    """Balances after journal, as the ledger's SQL sums them (debit +, credit -)."""
    result = dict(balances)
    for entry in journal.entries:
        result[entry.account] = result.get(entry.account, 0) + entry.signed_amount
    return result


def test_posted_journals_keep_the_books_at_zero() -> None:
    balances: dict[str, int] = {}
    for journal in (
        journal_for_payment("pay_1", "mer_1", 1_000, "usd"),
        journal_for_payment("pay_2", "mer_1", 500, "usd"),
        journal_for_payment("pay_3", "mer_2", 700, "jpy"),
        journal_for_refund("re_1", "pay_1", "mer_1", 300, "usd"),
    ):
        before = dict(balances)
        balances = post(balances, journal)
        assert balances != before
    assert balances == {
        CLEARING: 1_200,
        MERCHANT: -1_200,
        "stripe_clearing:jpy": 700,
        "merchant_available:mer_2:jpy": -700,
    }
    assert sum(balances.values()) == 0


@pytest.mark.parametrize("amount", [0, -5, True, 1.5])
def test_non_positive_or_non_int_amounts_are_refused(amount: int) -> None:
    with pytest.raises(DomainError):
        journal_for_payment("pay_1", "mer_1", amount, "usd")
    with pytest.raises(DomainError):
        journal_for_refund("re_1", "pay_1", "mer_1", amount, "usd")


def test_unbalanced_or_mixed_journals_are_refused() -> None:
    with pytest.raises(DomainError, match="not balanced"):
        Journal(
            "jrn_x",
            "payment",
            "pay_x",
            "pay_x",
            "mer_1",
            "usd",
            (
                Entry(CLEARING, "debit", 100, "usd"),
                Entry(MERCHANT, "credit", 99, "usd"),
            ),
        )
    with pytest.raises(DomainError, match="currencies"):
        Journal(
            "jrn_x",
            "payment",
            "pay_x",
            "pay_x",
            "mer_1",
            "usd",
            (
                Entry(CLEARING, "debit", 100, "usd"),
                Entry("merchant_available:mer_1:eur", "credit", 100, "eur"),
            ),
        )
    with pytest.raises(DomainError, match="no entries"):
        Journal("jrn_x", "payment", "pay_x", "pay_x", "mer_1", "usd", ())
    with pytest.raises(DomainError):
        Entry(CLEARING, "sideways", 1, "usd")  # type: ignore[arg-type]


def test_bad_ids_and_currencies() -> None:
    with pytest.raises(ValidationError):
        journal_for_payment("pay_1", "mer_1", 100, "xxx")
    for merchant in ("", "mer:1"):
        with pytest.raises(DomainError):
            merchant_available_account(merchant, "usd")
    with pytest.raises(DomainError):
        journal_for_payment("", "mer_1", 100, "usd")
    with pytest.raises(DomainError):
        journal_for_refund("re_1", "", "mer_1", 100, "usd")


def test_account_names() -> None:
    assert stripe_clearing_account("EUR") == "stripe_clearing:eur"
    assert merchant_available_account("mer_9", "jpy") == "merchant_available:mer_9:jpy"


def test_to_dict() -> None:
    assert journal_for_payment("pay_1", "mer_1", 10, "usd").to_dict() == {
        "journal_id": "jrn_payment_pay_1",
        "source_type": "payment",
        "source_id": "pay_1",
        "payment_id": "pay_1",
        "merchant_id": "mer_1",
        "currency": "usd",
        "entries": [
            {"account": CLEARING, "direction": "debit", "amount": 10, "currency": "usd"},
            {"account": MERCHANT, "direction": "credit", "amount": 10, "currency": "usd"},
        ],
    }
