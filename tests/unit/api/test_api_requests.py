"""Create requests for payments and refunds, their fingerprints and response objects (pure)."""

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


ROW = {
    "id": "pay_" + "a" * 24, "amount": 500, "currency": "usd", "status": "failed",
    "customer": "c", "payment_method": "pm", "description": None, "metadata": {"k": "v"},
    "amount_refunded": 0, "failure_code": "card_declined", "failure_message": "no",
    "created": 1_700_000_000,
}


def test_payment_object() -> None:
    obj = payments.payment_object(ROW)
    assert obj["object"] == "payment"
    assert obj["status"] == "failed"
    assert list(obj) == ["id", "object", "amount", "currency", "status", "customer",
                         "payment_method", "description", "metadata", "amount_refunded",
                         "failure_code", "failure_message", "created"]


def test_replay_renders_the_payment_as_first_created() -> None:
    obj = payments.payment_object({**ROW, "amount_refunded": 200}, as_created=True)
    assert (obj["status"], obj["amount_refunded"], obj["failure_code"],
            obj["failure_message"]) == ("pending", 0, None, None)
    assert obj["id"] == ROW["id"]


def test_refund_parse_and_object() -> None:
    pid = "pay_" + "b" * 24
    assert refunds.parse_create({"payment": pid}) == refunds.RefundParams(pid, None)
    assert refunds.parse_create({"payment": pid, "amount": 5}).amount == 5
    with pytest.raises(NotFound):
        refunds.parse_create({"payment": "ch_1"})
    with pytest.raises(InvalidRequest) as info:
        refunds.parse_create({"payment": pid, "reason": "x"})
    assert info.value.param == "reason"
    row = {"id": "re_" + "c" * 24, "payment_id": pid, "amount": 5, "currency": "usd",
           "status": "failed", "failure_code": "x", "failure_message": None, "created": 1}
    assert refunds.refund_object(row)["payment"] == pid
    assert refunds.refund_object(row, as_created=True)["status"] == "pending"
