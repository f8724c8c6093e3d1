"""The payment as the other parties see it now: its PaymentIntent at Stripe, its pending entry
at the worker."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import stripe

from paystream.domain.trace import PendingEntry, StripeIntent
from paystream.settings import Settings


def _charges(pi: Any) -> tuple[Mapping[str, Any], ...]:
    # Older API versions (and localstripe) list the charges; newer ones name the latest.
    if "charges" in pi and pi["charges"] is not None:
        found = list(pi["charges"]["data"])
    elif "latest_charge" in pi and pi["latest_charge"] is not None:
        found = [pi["latest_charge"]]
    else:
        found = []
    out = []
    for charge in found:
        if isinstance(charge, str):
            out.append({"id": charge})
            continue
        out.append({k: charge[k] for k in ("id", "status", "amount", "amount_refunded",
                                            "failure_code") if k in charge})
    return tuple(out)


async def payment_intent(settings: Settings, pi_id: str, *, timeout: float) -> StripeIntent:
    """One retrieve through the stripe SDK at the configured base URL (no retries: a
    trace reports an unavailable Stripe, it does not wait it out)."""
    http = stripe.AIOHTTPClient(timeout=timeout)
    client = stripe.StripeClient(settings.stripe_api_key,
                                 base_addresses={"api": settings.stripe_api_base},
                                 http_client=http, max_network_retries=0)
    try:
        pi = await client.v1.payment_intents.retrieve_async(pi_id)
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
    return StripeIntent(id=pi["id"], status=pi["status"], amount=int(pi["amount"]),
                        currency=pi["currency"], created=float(pi["created"]),
                        charges=_charges(pi))


def worker_url(settings: Settings) -> str:
    return f"http://{settings.faust_web_host}:{settings.faust_web_port}"


async def pending_entry(settings: Settings, object_id: str, *,
                        timeout: float) -> PendingEntry | None:
    """The entry in the pending table (None: not pending), asked of any worker: the
    view's table_route forwards the request to the worker that owns the key."""
    url = f"{worker_url(settings)}/pending/{object_id}/"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
            http.get(url) as resp:
        try:
            body = json.loads(await resp.text())
        except ValueError:
            body = None
        if resp.status == 404 and isinstance(body, dict) and "error" in body:
            return None  # the view's own answer: not pending
        if resp.status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"GET {url} answered HTTP {resp.status}")
        entry = body
    return PendingEntry(status=str(entry["status"]), attempts=int(entry["attempts"]),
                        since=float(entry["since"]), next_poll_at=float(entry["next_poll_at"]),
                        last_error=entry.get("last_error"))
