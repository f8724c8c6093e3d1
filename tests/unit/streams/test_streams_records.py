"""Decoding Debezium envelopes and our internal messages (pure, no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from paystream.domain import PaymentStatus, payment_object, refund_object
from streams.adapters.cdc import Change, decode_change, id_key
from streams.errors import DecodeError
from streams.messages import FraudCheck, Verdict
from streams.rows import PaymentRow, RefundRow


def row(**overrides: Any) -> dict[str, Any]:
    base = {
        "id": "pay_1", "merchant_id": "acct_1", "amount": 1050, "currency": "usd",
        "status": "pending", "customer": "c_1", "payment_method": "pm_card_visa",
        "description": None, "metadata": '{"order": "o-1"}', "amount_refunded": 0,
        "stripe_payment_intent_id": None, "failure_code": None, "failure_message": None,
        "created_at": "2026-11-23T14:59:31.829509Z", "updated_at": "2026-11-23T14:59:31Z",
    }
    base.update(overrides)
    return base


REFUND = {"id": "re_1", "payment_id": "pay_1", "merchant_id": "acct_1", "amount": 500,
          "currency": "usd", "status": "succeeded", "stripe_refund_id": "re_s",
          "created_at": "2026-01-01T00:00:00Z"}


def envelope(op: str, before: dict | None, after: dict | None, **source: Any) -> bytes:
    return json.dumps({
        "before": before, "after": after, "op": op, "ts_ms": 1,
        "source": {"table": "payments", "lsn": 67433680, "txId": 768, "ts_ms": 1795445971833,
                   "snapshot": "false", **source},
    }).encode()


def test_id_key_is_the_bytes_debezium_writes() -> None:
    assert id_key("pay_t1") == b'{"id":"pay_t1"}'


def test_create_is_decoded_with_its_source_position() -> None:
    change = decode_change(id_key("pay_1"), envelope("c", None, row()))
    assert isinstance(change, Change)
    assert (change.op, change.key_id, change.lsn, change.tx_id) == ("c", "pay_1", 67433680, 768)
    assert change.source_ts_ms == 1795445971833 and change.snapshot is False
    assert change.old_status is None and change.new_status == "pending"
    assert change.entered("pending") and not change.entered("succeeded")


def test_update_enters_a_status_only_when_it_changes() -> None:
    moved = decode_change(id_key("pay_1"), envelope(
        "u", row(status="processing"), row(status="succeeded")))
    assert moved is not None and moved.entered("succeeded")
    # e.g. amount_refunded changing on a succeeded payment: not a new success.
    again = decode_change(id_key("pay_1"), envelope(
        "u", row(status="succeeded"), row(status="succeeded", amount_refunded=5)))
    assert again is not None and not again.entered("succeeded")


def test_snapshot_read_counts_as_arriving_in_its_status() -> None:
    change = decode_change(id_key("pay_1"), envelope("r", None, row(status="succeeded"),
                                                     snapshot="true"))
    assert change is not None and change.snapshot and change.entered("succeeded")


def test_delete_uses_the_before_image_and_tombstones_are_none() -> None:
    change = decode_change(id_key("pay_1"), envelope("d", row(), None))
    assert change is not None and change.row["id"] == "pay_1" and not change.entered("pending")
    assert decode_change(id_key("pay_1"), None) is None


def test_schema_wrapped_envelopes_are_unwrapped() -> None:
    payload = json.loads(envelope("c", None, row()))
    wrapped = json.dumps({"schema": {}, "payload": payload}).encode()
    assert decode_change(id_key("pay_1"), wrapped) is not None


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (None, envelope("c", None, row()), "key"),
        (b"not json", envelope("c", None, row()), "key"),
        (b'{"other": 1}', envelope("c", None, row()), "key"),
        (id_key("pay_1"), b"{nope", "value"),
        (id_key("pay_1"), b"[1, 2]", "value"),
        (id_key("pay_1"), envelope("x", None, row()), "op"),
        (id_key("pay_1"), envelope("c", None, None), "after"),
        (id_key("pay_1"), envelope("d", None, None), "before"),
        (id_key("pay_2"), envelope("c", None, row()), "id"),
    ],
)
def test_malformed_messages_raise_decode_error_naming_the_field(
    key: bytes | None, value: bytes, field: str
) -> None:
    with pytest.raises(DecodeError) as err:
        decode_change(key, value)
    assert err.value.field == field


def test_payment_row_parses_debezium_strings() -> None:
    payment = PaymentRow.parse(row())
    assert payment.status is PaymentStatus.PENDING
    assert payment.metadata == {"order": "o-1"}
    assert payment.created_at == datetime(2026, 11, 23, 14, 59, 31, 829509, tzinfo=UTC)
    assert payment.description is None


def test_public_objects_are_the_api_objects() -> None:
    payment = PaymentRow.parse(row(description="Order 1001", status="succeeded"))
    assert payment.public() == payment_object({
        **row(description="Order 1001", status="succeeded", metadata={"order": "o-1"}),
        "created": 1795445971,
    })
    refund = RefundRow.parse(REFUND)
    assert refund.public() == refund_object(
        {**REFUND, "failure_code": None, "failure_message": None, "created": 1767225600})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": 10.5}, "amount"),
        ({"amount": True}, "amount"),
        ({"currency": "xxx"}, "currency"),
        ({"status": "weird"}, "status"),
        ({"metadata": "{broken"}, "metadata"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"customer": ""}, "customer"),
    ],
)
def test_payment_row_refuses_corrupt_columns(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(DecodeError) as err:
        PaymentRow.parse(row(**overrides))
    assert err.value.field == field


def test_refund_row_parses() -> None:
    refund = RefundRow.parse(REFUND)
    assert refund.public()["payment"] == "pay_1"


def test_internal_messages_round_trip_and_ignore_unknown_fields() -> None:
    check = FraudCheck(payment_id="pay_1", merchant_id="acct_1", customer="c", payment_method="pm",
                       amount=5, currency="usd", created_ms=1, partition=2)
    assert FraudCheck.loads(check.dumps()) == check
    data = json.loads(check.dumps())
    data["added_later"] = True
    assert FraudCheck.loads(json.dumps(data).encode()) == check
    with pytest.raises(DecodeError):
        Verdict.loads(b'{"payment_id": "pay_1"}')
