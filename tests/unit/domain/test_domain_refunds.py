"""Refund bounds: what is left to refund and which requests fit."""

from __future__ import annotations

import pytest

from paystream.domain.errors import DomainError, ValidationError
from paystream.domain.refunds import check_refund, refundable_amount
from paystream.domain.status import PaymentStatus


def test_refundable_amount() -> None:
    assert refundable_amount(1_000, 0) == 1_000
    assert refundable_amount(1_000, 400) == 600
    assert refundable_amount(1_000, 1_000) == 0


@pytest.mark.parametrize(("captured", "refunded"), [(100, 101), (-1, 0), (100, -1)])
def test_inconsistent_totals_are_a_domain_error(captured: int, refunded: int) -> None:
    with pytest.raises(DomainError):
        refundable_amount(captured, refunded)


def refund(
    amount: int | None, refunded: int = 0, status: PaymentStatus = PaymentStatus.SUCCEEDED
) -> int:
    return check_refund(amount, captured=1_000, already_refunded=refunded, payment_status=status)


def test_default_is_the_rest() -> None:
    assert refund(None) == 1_000
    assert refund(None, refunded=250) == 750


def test_partial_and_exact_refunds() -> None:
    assert refund(1) == 1
    assert refund(750, refunded=250) == 750


def test_too_large() -> None:
    with pytest.raises(ValidationError) as caught:
        refund(751, refunded=250)
    assert (caught.value.param, caught.value.code) == ("amount", "amount_too_large")


@pytest.mark.parametrize(
    ("amount", "code"),
    [(0, "amount_too_small"), (-5, "amount_too_small"), (10.0, "parameter_invalid_integer")],
)
def test_amount_is_validated_like_a_payment_amount(amount: int, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        refund(amount)
    assert (caught.value.param, caught.value.code) == ("amount", code)


def test_fully_refunded() -> None:
    with pytest.raises(ValidationError) as caught:
        refund(None, refunded=1_000)
    assert (caught.value.param, caught.value.code) == ("payment", "charge_already_refunded")


@pytest.mark.parametrize("status", [s for s in PaymentStatus if s is not PaymentStatus.SUCCEEDED])
def test_only_succeeded_payments_are_refundable(status: PaymentStatus) -> None:
    with pytest.raises(ValidationError) as caught:
        refund(100, status=status)
    assert (caught.value.param, caught.value.code) == ("payment", "charge_not_refundable")
