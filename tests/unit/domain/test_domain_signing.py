"""Webhook signatures (Stripe's scheme, checked with Stripe's own verifier) and fingerprints."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
import stripe

from paystream.domain.signing import request_fingerprint, sign

PAYLOAD = b'{"id":"evt_1","type":"payment.succeeded"}'
SECRET = "whsec_current"
NOW = 1_700_000_000


def accepted_by_stripe(header: str, secret: str = SECRET, payload: bytes = PAYLOAD) -> bool:
    """What a merchant's receiver built on Stripe's library decides (5 minutes' tolerance)."""
    try:
        return bool(stripe.WebhookSignature.verify_header(payload.decode(), header, secret, 300))
    except stripe.SignatureVerificationError:
        return False


def test_sign_format_matches_stripe() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + PAYLOAD, hashlib.sha256).hexdigest()
    assert sign(PAYLOAD, SECRET, NOW) == f"t={NOW},v1={expected}"


def test_stripe_accepts_a_fresh_signature() -> None:
    assert accepted_by_stripe(sign(PAYLOAD, SECRET, int(time.time())))


def test_stripe_refuses_tampering_a_wrong_secret_and_a_stale_signature() -> None:
    now = int(time.time())
    assert not accepted_by_stripe(sign(PAYLOAD, SECRET, now), payload=PAYLOAD + b" ")
    assert not accepted_by_stripe(sign(PAYLOAD, SECRET, now).replace(f"t={now}", f"t={now + 1}"))
    assert not accepted_by_stripe(sign(PAYLOAD, SECRET, now), secret="whsec_other")
    assert not accepted_by_stripe(sign(PAYLOAD, SECRET, now - 301))


def test_sign_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        sign(PAYLOAD, "", NOW)
    with pytest.raises(ValueError):
        sign(PAYLOAD, SECRET, -1)


def test_request_fingerprint_is_canonical() -> None:
    a = {"amount": 1050, "currency": "usd", "metadata": {"b": 1, "a": "é"}}
    b = {"metadata": {"a": "é", "b": 1}, "currency": "usd", "amount": 1050}
    assert request_fingerprint(a) == request_fingerprint(b)
    assert len(request_fingerprint(a)) == 64
    assert request_fingerprint(a) != request_fingerprint({**a, "amount": 1051})
    assert request_fingerprint({"amount": 10}) != request_fingerprint({"amount": 10.0})
