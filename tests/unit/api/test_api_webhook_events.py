"""Stripe events mapped to guarded transitions, and signature checks (pure)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe

from api.errors import InvalidRequest
from api.webhooks import (
    PAYMENTS,
    REFUNDS,
    Change,
    MalformedEvent,
    changes_for,
    verify_signature,
)
from paystream.domain.status import PaymentStatus, RefundStatus, map_stripe_payment_intent_status

PAY = "pay_" + "a" * 24
RE = "re_" + "b" * 24


def event(kind: str, obj: Any) -> dict[str, Any]:
    return {"id": "evt_1", "type": kind, "data": {"object": obj}}


@pytest.mark.parametrize(
    ("kind", "target"),
    [("payment_intent.succeeded", PaymentStatus.SUCCEEDED),
     ("payment_intent.payment_failed", PaymentStatus.FAILED),
     ("payment_intent.canceled", PaymentStatus.CANCELED),
     ("payment_intent.processing", PaymentStatus.PROCESSING),
     ("payment_intent.requires_action", PaymentStatus.REQUIRES_ACTION)],
)
def test_payment_intent_events(kind: str, target: PaymentStatus) -> None:
    [change] = changes_for(event(kind, {"id": "pi_1", "metadata": {"payment_id": PAY}})) or []
    assert (change.table, change.stripe_id, change.our_id, change.target) == (
        PAYMENTS, "pi_1", PAY, target)
    assert (change.failure != {}) is (target is PaymentStatus.FAILED)


def test_failure_details_come_from_last_payment_error() -> None:
    obj = {"id": "pi_1", "last_payment_error": {"code": "card_declined", "message": "Declined"}}
    [change] = changes_for(event("payment_intent.payment_failed", obj)) or []
    assert change.failure == {"failure_code": "card_declined", "failure_message": "Declined"}
    [bare] = changes_for(event("payment_intent.payment_failed", {"id": "pi_1"})) or []
    assert bare.failure == {"failure_code": "payment_failed", "failure_message": None}


def test_metadata_that_cannot_be_our_id_is_ignored() -> None:
    [change] = changes_for(event("payment_intent.succeeded",
                                 {"id": "pi_1", "metadata": {"payment_id": "x'; drop"}})) or []
    assert change.our_id is None


def test_refund_events() -> None:
    obj = {"id": "re_s1", "status": "failed", "failure_reason": "lost_card",
           "metadata": {"refund_id": RE}}
    [change] = changes_for(event("refund.failed", obj)) or []
    assert change == Change(REFUNDS, "re_s1", RE, RefundStatus.FAILED,
                            {"failure_code": "lost_card"})
    assert changes_for(event("refund.updated", {**obj, "status": "pending"})) == []
    [ok] = changes_for(event("charge.refund.updated", {**obj, "status": "succeeded"})) or []
    assert (ok.table, ok.target, ok.failure) == (REFUNDS, RefundStatus.SUCCEEDED, {})
    charge = {"id": "ch_1", "refunds": {"data": [{**obj, "status": "succeeded"},
                                                 {**obj, "id": "re_s2", "status": "pending"}]}}
    assert [c.stripe_id for c in changes_for(event("charge.refunded", charge)) or []] == [
        "re_s1"]


def test_unknown_types_are_ignored() -> None:
    assert changes_for(event("customer.created", {"id": "cus_1"})) is None


@pytest.mark.parametrize(
    "bad",
    [{"id": "evt"}, event("payment_intent.succeeded", None),
     event("payment_intent.succeeded", {"status": "succeeded"}),
     event("refund.updated", {"id": "re_1", "status": "weird"}),
     {"type": 5, "data": {}}],
)
def test_malformed_events(bad: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent):
        changes_for(bad)


PAYLOAD = json.dumps(event("payment_intent.succeeded", {"id": "pi_1"})).encode()


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=timestamp)


def test_signature_accepted_with_any_configured_secret() -> None:
    verify_signature(PAYLOAD, sign(PAYLOAD, "whsec_a"), ["whsec_a", "whsec_b"])
    verify_signature(PAYLOAD, sign(PAYLOAD, "whsec_b"), ["whsec_a", "whsec_b"])


@pytest.mark.parametrize(
    ("payload", "header"),
    [(PAYLOAD + b" ", sign(PAYLOAD, "whsec_a")),
     (PAYLOAD, sign(PAYLOAD, "whsec_other")),
     (PAYLOAD, sign(PAYLOAD, "whsec_a", int(time.time()) - 301)),
     (PAYLOAD, None), (PAYLOAD, ""), (PAYLOAD, "garbage"), (PAYLOAD, "t=abc,v1=00"),
     (b"\xff" + PAYLOAD, sign(PAYLOAD, "whsec_a"))],
)
def test_bad_signatures_are_refused(payload: bytes, header: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        verify_signature(payload, header, ["whsec_a"])
    assert info.value.status == 400


def test_no_configured_secret_accepts_nothing() -> None:
    with pytest.raises(InvalidRequest):
        verify_signature(PAYLOAD, sign(PAYLOAD, "whsec_a"), [])


def test_the_payment_intents_own_status_goes_through_the_one_stripe_mapping() -> None:
    # Same mapping as the worker's: an authorised, uncaptured PaymentIntent is processing.
    obj = {"id": "pi_1", "status": "requires_capture", "metadata": {"payment_id": PAY}}
    [change] = changes_for(event("payment_intent.processing", obj)) or []
    assert change.target is map_stripe_payment_intent_status("requires_capture")
    with pytest.raises(MalformedEvent):
        changes_for(event("payment_intent.succeeded", {**obj, "status": "weird"}))
