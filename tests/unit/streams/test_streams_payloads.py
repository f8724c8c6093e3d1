"""What a change event turns into: the journal it posts, the merchant event it sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from paystream.domain.ids import notification_event_id
from paystream.domain.objects import payment_object
from paystream.settings import Settings
from streams.adapters.cdc import decode_change, id_key
from streams.agents import notify
from streams.journals import journal_for_change

settings = Settings.from_env()
PAYMENTS = settings.payments_topic
REFUNDS = settings.refunds_topic


def payment(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "pay_1", "merchant_id": "acct_1", "amount": 1050, "currency": "usd",
            "status": status, "customer": "c_1", "payment_method": "pm_card_visa",
            "metadata": "{}", "amount_refunded": 0, "stripe_payment_intent_id": "pi_1",
            "failure_code": None, "failure_message": None,
            "created_at": "2026-11-23T14:59:31Z", **extra}


def refund(status: str) -> dict[str, Any]:
    return {"id": "re_1", "payment_id": "pay_1", "merchant_id": "acct_1", "amount": 300,
            "currency": "usd", "status": status, "stripe_refund_id": "re_s",
            "created_at": "2026-11-23T15:00:00Z"}


def event(op: str, before: dict | None, after: dict | None) -> bytes:
    return json.dumps({"op": op, "before": before, "after": after,
                       "source": {"ts_ms": 1795446000123}}).encode()


def journal_for(topic: str, key: bytes, raw: bytes | None) -> Any:
    return journal_for_change(decode_change(key, raw), payment=topic == PAYMENTS)


def notification_for(topic: str, key: bytes, raw: bytes | None) -> Any:
    return notify.notification_for(decode_change(key, raw), payment=topic == PAYMENTS)


def test_a_payment_entering_succeeded_posts_its_journal() -> None:
    journal = journal_for(PAYMENTS, id_key("pay_1"),
                          event("u", payment("processing"), payment("succeeded")))
    assert journal is not None and journal.journal_id == "jrn_payment_pay_1"
    assert {(e.account, e.direction, e.amount) for e in journal.entries} == {
        ("stripe_clearing:usd", "debit", 1050),
        ("merchant_available:acct_1:usd", "credit", 1050),
    }


def test_a_succeeded_refund_posts_the_reverse() -> None:
    journal = journal_for(REFUNDS, id_key("re_1"),
                          event("u", refund("pending"), refund("succeeded")))
    assert journal is not None and journal.journal_id == "jrn_refund_re_1"
    assert {(e.account, e.direction) for e in journal.entries} == {
        ("merchant_available:acct_1:usd", "debit"), ("stripe_clearing:usd", "credit")}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, payment("pending")),
        (payment("pending"), payment("processing")),
        (payment("succeeded"), payment("succeeded", amount_refunded=300)),
        (payment("processing"), payment("failed")),
    ],
)
def test_nothing_else_posts(before: dict | None, after: dict) -> None:
    assert journal_for(PAYMENTS, id_key("pay_1"), event("u" if before else "c", before,
                                                           after)) is None


def test_terminal_transitions_become_deterministic_signed_events() -> None:
    raw = event("u", payment("processing"), payment("succeeded"))
    first = notification_for(PAYMENTS, id_key("pay_1"), raw)
    replayed = notification_for(PAYMENTS, id_key("pay_1"), raw)
    assert first is not None and first == replayed
    assert first.event_id == notification_event_id("pay_1", "succeeded")
    assert first.event_type == "payment.succeeded" and first.merchant_id == "acct_1"
    body = json.loads(first.payload)
    assert body["created"] == 1795446000 and body["data"]["object"]["id"] == "pay_1"


def test_the_event_carries_the_object_the_api_answers() -> None:
    after = payment("succeeded", description="Order 1001")
    note = notification_for(PAYMENTS, id_key("pay_1"), event("u", payment("processing"), after))
    assert note is not None
    obj = json.loads(note.payload)["data"]["object"]
    assert obj == payment_object({**after, "metadata": {}, "created": 1795445971})
    assert obj["description"] == "Order 1001"


def test_refund_events_and_non_events() -> None:
    failed = notification_for(REFUNDS, id_key("re_1"),
                              event("u", refund("pending"), refund("failed")))
    assert failed is not None and failed.event_type == "refund.failed"
    assert notification_for(PAYMENTS, id_key("pay_1"),
                            event("u", payment("pending"), payment("requires_action"))) is None
    assert notification_for(PAYMENTS, id_key("pay_1"), event(
        "u", payment("succeeded"), payment("succeeded", amount_refunded=1))) is None
    assert notification_for(PAYMENTS, id_key("pay_1"), None) is None


def test_event_ids_differ_per_status_and_object() -> None:
    ids = {notification_event_id(o, s) for o in ("pay_1", "pay_2")
           for s in ("succeeded", "failed")}
    assert len(ids) == 4 and all(i.startswith("evt_") and len(i) == 36 for i in ids)
    with pytest.raises(ValueError):
        notification_event_id("", "succeeded")
