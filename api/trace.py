"""GET /v1/payments/{id}/trace: what Postgres knows of one payment of the merchant, in order.

The same rows and the same domain timeline as `paystream trace`, read through the
replicas like every read. The change events on Kafka, the PaymentIntent at Stripe
and the worker's pending table are the operator command's to read (the API talks
to neither Kafka nor Stripe): the answer's `sources` says so. The operator console's
payment page (api/console_payments.py) answers the same document for any merchant's
payment.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from aiohttp import web

from api import reads
from api.errors import NotFound, json_response
from api.payments import payment_id
from api.state import MERCHANT
from paystream.domain.trace import TraceFacts, build_trace, facts_json
from paystream.trace_rows import load_facts

SOURCES = {
    "postgres": "ok",
    "kafka": "not read by the API (`paystream trace` reads the change events)",
    "stripe": "not read by the API (`paystream trace` asks Stripe)",
    "worker": "not read by the API (`paystream trace` asks the pending table)",
}


async def trace_document(request: web.Request, pid: str, *,
                         merchant_id: str | None) -> dict[str, Any] | None:
    """The answer for one payment: the merchant's (``merchant_id``) or, with None, any
    merchant's (the operator console). None if there is no such payment for them."""

    async def work(conn: psycopg.AsyncConnection) -> TraceFacts | None:
        return await load_facts(conn, pid, now=time.time(), merchant_id=merchant_id)

    facts = await reads.read(request, work)
    if facts is None:
        return None
    facts_out = facts_json(facts)
    # Sources the API does not read are left out rather than shown as empty.
    for key in ("change_events", "internal_messages", "pending_entry",
                "stripe_payment_intent"):
        facts_out.pop(key)
    return {"object": "payment_trace", **build_trace(facts).as_json(),
            "sources": SOURCES, "facts": facts_out}


async def retrieve(request: web.Request) -> web.Response:
    pid = payment_id(request)
    document = await trace_document(request, pid, merchant_id=request[MERCHANT].id)
    if document is None:
        # Another merchant's payment is indistinguishable from a missing one.
        raise NotFound(f"No such payment: '{pid}'", param="id")
    return json_response(document)
