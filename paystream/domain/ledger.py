"""Double-entry journals for succeeded payments and refunds.

Chart of accounts:

    stripe_clearing:{currency}                  asset: money Stripe holds for us
    merchant_available:{merchant_id}:{currency} liability: what we owe the merchant

A succeeded payment debits stripe_clearing and credits merchant_available;
a succeeded refund posts the reverse. Journal ids derive from their source
(``jrn_payment_<id>``, ``jrn_refund_<id>``), so a redelivered CDC event maps
to the same id and a unique constraint makes posting idempotent.

Sign convention for balances: debit adds, credit subtracts. Asset accounts
read positive, liability accounts negative (merchant_available at -1000
means we owe the merchant 1000), and all accounts together sum to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import DomainError
from .money import currency as _currency

Direction = Literal["debit", "credit"]
SourceType = Literal["payment", "refund"]


def stripe_clearing_account(currency: str) -> str:
    """The asset account for money Stripe holds for us in a currency."""
    return f"stripe_clearing:{_currency(currency).code}"


def merchant_available_account(merchant_id: str, currency: str) -> str:
    """The liability account for what we owe a merchant in a currency."""
    # ":" separates the account name's parts, so it cannot appear in an id.
    if not merchant_id or ":" in merchant_id:
        raise DomainError(f"invalid merchant id for an account name: {merchant_id!r}")
    return f"merchant_available:{merchant_id}:{_currency(currency).code}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One side of a journal: a positive amount debited or credited to an account."""

    account: str
    direction: Direction
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if self.direction not in ("debit", "credit"):
            raise DomainError(f"invalid entry direction: {self.direction!r}")
        if type(self.amount) is not int or self.amount <= 0:
            raise DomainError(f"entry amount must be a positive int, got {self.amount!r}")

    @property
    def signed_amount(self) -> int:
        """The amount with the balance sign convention: debit +, credit -."""
        return self.amount if self.direction == "debit" else -self.amount


@dataclass(frozen=True, slots=True)
class Journal:
    """A balanced set of entries caused by one payment or refund."""

    journal_id: str
    source_type: SourceType
    source_id: str
    payment_id: str
    merchant_id: str
    currency: str
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise DomainError(f"journal {self.journal_id} has no entries")
        strays = {e.currency for e in self.entries} - {self.currency}
        if strays:
            raise DomainError(f"journal {self.journal_id} mixes currencies: {sorted(strays)}")
        if not self.is_balanced():
            raise DomainError(f"journal {self.journal_id} is not balanced")

    def is_balanced(self) -> bool:
        """Whether debits equal credits."""
        return sum(e.signed_amount for e in self.entries) == 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "journal_id": self.journal_id,
            "source_type": self.source_type,
            "source_id": self.source_id,
            "payment_id": self.payment_id,
            "merchant_id": self.merchant_id,
            "currency": self.currency,
            "entries": [
                {
                    "account": e.account,
                    "direction": e.direction,
                    "amount": e.amount,
                    "currency": e.currency,
                }
                for e in self.entries
            ],
        }


def _journal(
    source_type: SourceType,
    source_id: str,
    payment_id: str,
    merchant_id: str,
    amount: int,
    currency: str,
    debit: str,
    credit: str,
) -> Journal:
    if not source_id or not payment_id:
        raise DomainError(f"{source_type} journal needs a source id and a payment id")
    if type(amount) is not int or amount <= 0:
        raise DomainError(f"journal amount must be a positive int, got {amount!r}")
    code = _currency(currency).code
    return Journal(
        journal_id=f"jrn_{source_type}_{source_id}",
        source_type=source_type,
        source_id=source_id,
        payment_id=payment_id,
        merchant_id=merchant_id,
        currency=code,
        entries=(
            Entry(debit, "debit", amount, code),
            Entry(credit, "credit", amount, code),
        ),
    )


def journal_for_payment(payment_id: str, merchant_id: str, amount: int, currency: str) -> Journal:
    """The journal posted when a payment succeeds: Stripe owes us, we owe the merchant."""
    return _journal(
        "payment",
        payment_id,
        payment_id,
        merchant_id,
        amount,
        currency,
        debit=stripe_clearing_account(currency),
        credit=merchant_available_account(merchant_id, currency),
    )


def journal_for_refund(
    refund_id: str, payment_id: str, merchant_id: str, amount: int, currency: str
) -> Journal:
    """The journal posted when a refund succeeds: the payment's journal reversed."""
    return _journal(
        "refund",
        refund_id,
        payment_id,
        merchant_id,
        amount,
        currency,
        debit=merchant_available_account(merchant_id, currency),
        credit=stripe_clearing_account(currency),
    )
