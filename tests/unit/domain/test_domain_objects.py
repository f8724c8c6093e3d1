"""The payment and refund objects, one shape for the API and the merchant webhooks."""

from __future__ import annotations

from paystream.domain.objects import payment_object, refund_object

PAYMENT = {
    "id": "pay_" + "a" * 24, "amount": 500, "currency": "usd", "status": "failed",
    "customer": "c", "payment_method": "pm", "description": None, "metadata": {"k": "v"},
    "amount_refunded": 0, "failure_code": "card_declined", "failure_message": "no",
    "created": 1_700_000_000,
}
REFUND = {
    "id": "re_" + "c" * 24, "payment_id": "pay_" + "a" * 24, "amount": 5, "currency": "usd",
    "status": "failed", "failure_code": "x", "failure_message": None, "created": 1,
}


def test_payment_object() -> None:
    obj = payment_object(PAYMENT)
    assert obj["object"] == "payment"
    assert obj["status"] == "failed"
    assert list(obj) == ["id", "object", "amount", "currency", "status", "customer",
                         "payment_method", "description", "metadata", "amount_refunded",
                         "failure_code", "failure_message", "created"]


def test_payment_object_ignores_other_columns_and_defaults_metadata() -> None:
    obj = payment_object({**PAYMENT, "metadata": None, "merchant_id": "acct_1"})
    assert obj["metadata"] == {} and "merchant_id" not in obj


def test_replay_renders_the_payment_as_first_created() -> None:
    obj = payment_object({**PAYMENT, "amount_refunded": 200}, as_created=True)
    assert (obj["status"], obj["amount_refunded"], obj["failure_code"],
            obj["failure_message"]) == ("pending", 0, None, None)
    assert obj["id"] == PAYMENT["id"]


def test_refund_object() -> None:
    obj = refund_object(REFUND)
    assert list(obj) == ["id", "object", "amount", "currency", "payment", "status",
                         "failure_code", "failure_message", "created"]
    assert obj["object"] == "refund" and obj["payment"] == REFUND["payment_id"]
    replay = refund_object(REFUND, as_created=True)
    assert (replay["status"], replay["failure_code"]) == ("pending", None)
