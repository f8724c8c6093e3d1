"""Stripe's webhook: verify the signature, dedupe the event id, apply the guarded transition.

The event id is recorded in ``stripe_events`` in the same transaction as the
transition, so a redelivered event changes nothing and a crash between the two
is impossible. Transitions use the same SQL guard as the stream workers: an
event that arrives out of order, or after the poller already applied the
outcome, matches no row and is a no-op.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import stripe
from aiohttp import web
from psycopg.rows import dict_row

from api import validation
from api.body import read_body
from api.errors import InvalidRequest, json_response
from api.state import METRICS, PRIMARY, SETTINGS
from paystream.domain.errors import ValidationError
from paystream.domain.status import (
    PaymentStatus,
    RefundStatus,
    guard_params,
    guarded_update_sql,
    map_stripe_payment_intent_status,
    map_stripe_refund_status,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Stripe-Signature"
TOLERANCE_SECONDS = 300

# The PaymentIntent events we act on, and the Stripe status each announces when
# its object does not carry one. Our status comes from the domain's one mapping
# of Stripe statuses (the same the worker uses for what it creates and polls).
PAYMENT_INTENT_EVENTS: Mapping[str, str] = {
    "payment_intent.processing": "processing",
    "payment_intent.requires_action": "requires_action",
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "requires_payment_method",
    "payment_intent.canceled": "canceled",
}
# Events whose data.object is a Refund; its own status says where it stands.
REFUND_EVENTS = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)
# data.object is a Charge listing its refunds.
CHARGE_REFUNDED = "charge.refunded"
_TOKEN = re.compile(r"[A-Za-z0-9_.\-]{1,255}")


class MalformedEvent(ValueError):
    """A correctly signed body that is not a Stripe event we can read."""


@dataclass(frozen=True, slots=True)
class Table:
    """Where a Stripe object's rows live: our table and the column holding its Stripe id."""

    name: str
    stripe_column: str


PAYMENTS = Table("payments", "stripe_payment_intent_id")
# The payment's amount_refunded is not written here: it follows from the refund
# row's change event (the stream workers), whichever of webhook or poller moved it.
REFUNDS = Table("refunds", "stripe_refund_id")


@dataclass(frozen=True, slots=True)
class Change:
    """Move our row tied to a Stripe object to ``target``.

    ``our_id`` is the id Stripe echoes in metadata; ``failure`` holds the columns
    written with a failed target (empty otherwise).
    """

    table: Table
    stripe_id: str
    our_id: str | None
    target: PaymentStatus | RefundStatus
    failure: Mapping[str, str | None] = field(default_factory=dict)


def verify_signature(payload: bytes, header: str | None, secrets: Sequence[str]) -> None:
    """Accept if any configured secret signs the payload within the tolerance (rotation)."""
    if not header:
        raise InvalidRequest(
            f"Missing {SIGNATURE_HEADER} header.", param=SIGNATURE_HEADER,
            code="signature_missing",
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            "Webhook body is not UTF-8.", param="body", code="invalid_json"
        ) from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError:
            continue
        return
    # Which check failed (format, secret, age) is not told: it would help forgers.
    raise InvalidRequest(
        "No valid signature found for the payload.",
        param=SIGNATURE_HEADER,
        code="signature_verification_failed",
    )


def _str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _metadata(obj: Mapping[str, Any], key: str) -> str | None:
    meta = obj.get("metadata")
    return _str(meta, key) if isinstance(meta, Mapping) else None


def _payment_change(kind: str, obj: Mapping[str, Any]) -> Change:
    pi = _str(obj, "id")
    if pi is None:
        raise MalformedEvent("payment intent without an id")
    try:
        target = map_stripe_payment_intent_status(_str(obj, "status")
                                                  or PAYMENT_INTENT_EVENTS[kind])
    except ValidationError as err:
        raise MalformedEvent(str(err)) from None
    failure: dict[str, str | None] = {}
    if target is PaymentStatus.FAILED:
        error = obj.get("last_payment_error")
        code = message = None
        if isinstance(error, Mapping):
            code = _str(error, "code") or _str(error, "decline_code")
            message = _str(error, "message")
        failure = {"failure_code": code or "payment_failed", "failure_message": message}
    return Change(PAYMENTS, pi, validation.object_id(_metadata(obj, "payment_id"), "pay"),
                  target, failure)


def _refund_change(obj: Mapping[str, Any]) -> Change | None:
    stripe_refund = _str(obj, "id")
    if stripe_refund is None:
        raise MalformedEvent("refund without an id")
    try:
        target = map_stripe_refund_status(obj.get("status"))  # type: ignore[arg-type]
    except ValidationError as err:
        raise MalformedEvent(str(err)) from None
    if target is RefundStatus.PENDING:
        return None
    failure = ({"failure_code": _str(obj, "failure_reason") or "refund_failed"}
               if target is RefundStatus.FAILED else {})
    return Change(REFUNDS, stripe_refund, validation.object_id(_metadata(obj, "refund_id"), "re"),
                  target, failure)


def changes_for(event: Mapping[str, Any]) -> list[Change] | None:
    """The transitions an event asks for; None for a type we ignore. Pure."""
    kind = event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(kind, str):
        raise MalformedEvent("event without a type")
    if kind in PAYMENT_INTENT_EVENTS or kind in REFUND_EVENTS or kind == CHARGE_REFUNDED:
        if not isinstance(obj, Mapping):
            raise MalformedEvent("event without data.object")
    if kind in PAYMENT_INTENT_EVENTS:
        return [_payment_change(kind, obj)]  # type: ignore[arg-type]
    if kind in REFUND_EVENTS:
        change = _refund_change(obj)  # type: ignore[arg-type]
        return [] if change is None else [change]
    if kind == CHARGE_REFUNDED:
        refunds = obj.get("refunds")  # type: ignore[union-attr]
        listed = refunds.get("data") if isinstance(refunds, Mapping) else None
        found = [_refund_change(r) for r in listed or [] if isinstance(r, Mapping)]
        return [c for c in found if c is not None]
    return None


async def _find_locked(cur: psycopg.AsyncCursor[Any], change: Change) -> dict[str, Any] | None:
    """Our row for a Stripe object, locked: by the Stripe id stored on it, else by
    the id Stripe echoes in metadata (the webhook may beat the worker's write-back
    of the Stripe id) unless that row is bound to another Stripe object."""
    table = change.table
    select = f"SELECT id, {table.stripe_column} AS stripe_id FROM {table.name} WHERE"
    await cur.execute(f"{select} {table.stripe_column} = %s FOR UPDATE", (change.stripe_id,))
    row = await cur.fetchone()
    if row is None and change.our_id is not None:
        await cur.execute(f"{select} id = %s FOR UPDATE", (change.our_id,))
        row = await cur.fetchone()
        if row is not None and row["stripe_id"] not in (None, change.stripe_id):
            return None
    return row


async def _apply(cur: psycopg.AsyncCursor[Any], change: Change) -> tuple[str, str]:
    row = await _find_locked(cur, change)
    if row is None:
        return "unmatched", ""
    written = {change.table.stripe_column: change.stripe_id, **change.failure}
    await cur.execute(guarded_update_sql(change.table.name, change.target, list(written)),
                      {"id": row["id"], **guard_params(change.target), **written})
    return ("applied" if await cur.fetchone() else "noop"), row["id"]


def _summarise(outcomes: list[str]) -> str:
    for outcome in ("applied", "noop", "unmatched"):
        if outcome in outcomes:
            return outcome
    return "noop"


async def stripe_webhook(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    payload = await read_body(request)
    try:
        verify_signature(
            payload,
            request.headers.get(SIGNATURE_HEADER),
            request.app[SETTINGS].stripe_webhook_secrets,
        )
    except InvalidRequest:
        metrics.webhook_events.labels("invalid_signature").inc()
        raise
    try:
        event = json.loads(payload)
        if not isinstance(event, dict):
            raise MalformedEvent("not a JSON object")
        event_id = event.get("id")
        kind = event.get("type")
        # Both are stored; Stripe's are short ASCII tokens (evt_..., payment_intent.succeeded).
        if not isinstance(event_id, str) or not _TOKEN.fullmatch(event_id):
            raise MalformedEvent("event without a valid id")
        if not isinstance(kind, str) or not _TOKEN.fullmatch(kind):
            raise MalformedEvent("event without a valid type")
        changes = changes_for(event)
    except (ValueError, RecursionError) as err:
        metrics.webhook_events.labels("malformed").inc()
        raise InvalidRequest(
            f"Not a readable Stripe event: {err}", param="body", code="invalid_event"
        ) from None

    async with request.app[PRIMARY].connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        async with conn.transaction():
            await cur.execute(
                "INSERT INTO stripe_events (id, type) VALUES (%s, %s) "
                "ON CONFLICT (id) DO NOTHING RETURNING id",
                (event_id, kind),
            )
            if await cur.fetchone() is None:
                outcome, object_ids = "duplicate", []
            else:
                results = [await _apply(cur, change) for change in changes or []]
                outcome = "ignored" if changes is None else _summarise([r[0] for r in results])
                object_ids = [r[1] for r in results if r[1]]
                await cur.execute(
                    "UPDATE stripe_events SET outcome = %s, object_ids = %s WHERE id = %s",
                    (outcome, object_ids, event_id),
                )
    metrics.webhook_events.labels(outcome).inc()
    log.info("stripe event %s (%s): %s", event_id, kind, outcome)
    return json_response({"received": True, "outcome": outcome})
