"""HMAC signatures for outbound merchant webhooks, and request-body fingerprints.

The header follows Stripe's scheme, ``t=<unix ts>,v1=<hex hmac-sha256 of "<ts>." + payload>``,
so merchants verify it with the webhook helpers of Stripe's own libraries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

SIGNATURE_HEADER = "PayStream-Signature"


def _digest(payload: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The signature header value for payload at timestamp."""
    if not secret:
        raise ValueError("signing secret must not be empty")
    if type(timestamp) is not int or timestamp < 0:
        raise ValueError(f"timestamp must be a non-negative int, got {timestamp!r}")
    return f"t={timestamp},v1={_digest(payload, secret, timestamp)}"


def request_fingerprint(body: Mapping[str, object]) -> str:
    """SHA-256 of the body as canonical JSON, to tell a replay from a different request."""
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
