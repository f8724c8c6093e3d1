"""Identifiers: our prefixed random ids and deterministic Stripe idempotency keys."""

from __future__ import annotations

import hashlib
import re
import secrets
import string

_ALPHABET = string.digits + string.ascii_letters
_PREFIX = re.compile(r"[a-z][a-z0-9]*")
ID_LENGTH = 24  # base62: about 143 bits, so collisions are not a practical concern
_ID_SPACE = len(_ALPHABET) ** ID_LENGTH
MAX_IDEMPOTENCY_KEY = 255  # Stripe's limit


def new_id(prefix: str) -> str:
    """A new id such as ``pay_`` followed by 24 random base62 characters."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"id prefix must be lower-case letters and digits, got {prefix!r}")
    # One draw for the whole id, spelled out in base62: uniform over every
    # 24-character id, and a tenth of the cost of 24 secrets.choice calls.
    number = secrets.randbelow(_ID_SPACE)
    chars = []
    for _ in range(ID_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(chars)}"


def stripe_idempotency_key(kind: str, our_id: str) -> str:
    """The Stripe Idempotency-Key for an action on one of our objects.

    Derived, never random, so a retried or redelivered request replays the
    first Stripe call instead of charging twice.
    """
    if not kind or not our_id:
        raise ValueError("idempotency key needs a kind and an id")
    key = f"paystream-{kind}-{our_id}"
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValueError(f"idempotency key longer than {MAX_IDEMPOTENCY_KEY} characters")
    return key


def notification_event_id(object_id: str, status: str) -> str:
    """The id of the merchant event for an object reaching a status: ``evt_`` + 32 hex.

    Derived from (object id, status), so however often the change that caused
    it is delivered or replayed, the merchant sees one event id.
    """
    if not object_id or not status:
        raise ValueError("event id needs an object id and a status")
    digest = hashlib.sha256(f"{object_id}:{status}".encode()).hexdigest()
    return f"evt_{digest[:32]}"
