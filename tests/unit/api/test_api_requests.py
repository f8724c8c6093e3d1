"""Create requests for payments and refunds and their fingerprints (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from api import payments, refunds
from api.errors import InvalidRequest, NotFound
from paystream.domain.errors import ValidationError


def body(**overrides: Any) -> dict[str, Any]:
    return {"amount": 1050, "currency": "usd", "customer": "cus_1",
            "payment_method": "pm_card_visa", **overrides}


def test_parse_create_normalises() -> None:
    params = payments.parse_create(body(currency="EUR", metadata=None))
    assert params.currency == "eur"
    assert params.metadata == {}
    assert params.description is None


@pytest.mark.parametrize(
    ("overrides", "param"),
    [({"amount": 10.0}, "amount"), ({"amount": True}, "amount"), ({"amount": 0}, "amount"),
     ({"amount": -1}, "amount"), ({"amount": 100_000_000}, "amount"), ({"currency": None},
     "currency"), ({"currency": "usdx"}, "currency"), ({"customer": None}, "customer"),
     ({"payment_method": ""}, "payment_method"), ({"extra": 1}, "extra")],
)
def test_parse_create_refusals(overrides: dict[str, Any], param: str) -> None:
    with pytest.raises((ValidationError, InvalidRequest)) as info:
        payments.parse_create(body(**overrides))
    assert info.value.param == param


def test_amount_limits_are_inclusive() -> None:
    assert payments.parse_create(body(amount=1)).amount == 1
    assert payments.parse_create(body(amount=99_999_999)).amount == 99_999_999


def test_fingerprint_ignores_spelling_but_not_content() -> None:
    a = payments.parse_create(body(metadata={"a": "1", "b": "2"}))
    same = payments.parse_create({**body(currency="USD"), "metadata": {"b": "2", "a": "1"}})
    assert a.fingerprint() == same.fingerprint()
    for change in ({"amount": 1051}, {"customer": "cus_2"}, {"metadata": {"a": "2"}},
                   {"description": "x"}):
        assert payments.parse_create(body(**change)).fingerprint() != a.fingerprint()


def test_payment_and_refund_fingerprints_never_collide() -> None:
    refund = refunds.RefundParams("pay_" + "a" * 24, 1050)
    assert refund.fingerprint() != payments.parse_create(body()).fingerprint()
    assert refund.fingerprint() != refunds.RefundParams("pay_" + "a" * 24, None).fingerprint()


def test_refund_parse() -> None:
    pid = "pay_" + "b" * 24
    assert refunds.parse_create({"payment": pid}) == refunds.RefundParams(pid, None)
    assert refunds.parse_create({"payment": pid, "amount": 5}).amount == 5
    with pytest.raises(NotFound):
        refunds.parse_create({"payment": "ch_1"})
    with pytest.raises(InvalidRequest) as info:
        refunds.parse_create({"payment": pid, "reason": "x"})
    assert info.value.param == "reason"
