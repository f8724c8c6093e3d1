"""HMAC signatures for outbound merchant webhooks, and request-body fingerprints.

The header follows Stripe's scheme, ``t=<unix ts>,v1=<hex hmac-sha256 of "<ts>." + payload>``,
so ``verify`` also checks Stripe's own ``Stripe-Signature`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence

SIGNATURE_HEADER = "PayStream-Signature"
DEFAULT_TOLERANCE = 300


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


def _parse(header: str) -> tuple[int, list[str]] | None:
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
        # Other schemes (Stripe's v0 test signatures) are ignored, as Stripe does.
    if len(timestamps) != 1 or not signatures:
        return None
    raw_ts = timestamps[0]
    # isdecimal rejects signs, spaces and non-ASCII digits that int() would accept;
    # the length cap keeps int() clear of its digit limit, which raises.
    if not (raw_ts.isascii() and raw_ts.isdecimal() and len(raw_ts) <= 20):
        return None
    return int(raw_ts), signatures


def verify(
    payload: bytes,
    header: str,
    secrets: Sequence[str],
    *,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> bool:
    """Whether header signs payload with one of secrets within tolerance seconds of now.

    Several secrets and several v1 values are accepted so a secret can be
    rotated without dropping deliveries. Never raises on a bad header.
    """
    if not isinstance(header, str) or isinstance(secrets, str):
        return False
    parsed = _parse(header)
    if parsed is None:
        return False
    timestamp, candidates = parsed
    if abs(now - timestamp) > tolerance:
        return False
    expected = [_digest(payload, s, timestamp) for s in secrets if s]
    matched = False
    # Compare every pair without stopping early, so timing says nothing about
    # which secret or which signature matched.
    for want in expected:
        for got in candidates:
            matched |= hmac.compare_digest(want.encode("ascii"), got.encode("utf-8"))
    return matched


def request_fingerprint(body: Mapping[str, object]) -> str:
    """SHA-256 of the body as canonical JSON, to tell a replay from a different request."""
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
