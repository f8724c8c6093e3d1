"""The gateway's side of a 429: the whole budget pauses and the call is tried again;
past its patience the object stays pending, and the breaker never hears of it. Its
creates, against a peer on 127.0.0.1 that records them: the very request the SDK's
service sends, and the answer's fields and errors read as before."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
import stripe
from aiohttp import web

from paystream.domain import PaymentStatus, RefundStatus
from paystream.settings import Settings
from streams.adapters.stripe_gateway import StripeGateway, StripeObject
from streams.errors import StripeRejected, StripeUnavailable
from streams.resilience import CircuitBreaker, CircuitState, RequestBudget
from streams.rows import PaymentRow, RefundRow


@pytest.fixture
async def gateway() -> AsyncIterator[StripeGateway]:
    # Nothing is sent: every call below goes through _call with a function of the test's.
    # A breaker that one failure opens: a 429 counted as one would show.
    made = StripeGateway(Settings.from_env(), budget=RequestBudget(1000.0),
                         breaker=CircuitBreaker(1, 30.0))
    try:
        yield made
    finally:
        await made.close()


def refused_then(refusals: int, retry_after: str) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= refusals:
            raise stripe.RateLimitError("Too many requests", http_status=429,
                                        headers={"Retry-After": retry_after})
        return "pi_1"

    return calls, call


async def test_429s_are_waited_out_and_the_call_answers(gateway: StripeGateway) -> None:
    calls, call = refused_then(2, "0.01")
    assert await gateway._call("payment_intent.create", call) == "pi_1"
    assert len(calls) == 3
    assert gateway.budget.pauses == 2  # every caller waited, not only this one
    assert gateway.breaker.state is CircuitState.CLOSED and gateway.breaker.opened_count == 0


async def test_a_429_longer_than_the_patience_is_unsent_and_not_an_outage(
        gateway: StripeGateway) -> None:
    calls, call = refused_then(1, "60")
    with pytest.raises(StripeUnavailable) as raised:
        await gateway._call("payment_intent.create", call)
    assert (raised.value.code, raised.value.unsent) == ("rate_limit", True)
    assert len(calls) == 1
    assert gateway.breaker.state is CircuitState.CLOSED and gateway.breaker.opened_count == 0


# --- creates: the SDK's request, the answer read as a plain dict ---------------------

Sent = tuple[str, str, dict[str, str], bytes]


@dataclass
class Recorder:
    """An HTTP peer on 127.0.0.1 that keeps every request and gives the answer it is told."""

    url: str
    sent: list[Sent] = field(default_factory=list)
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    app = web.Application()
    found = Recorder(url="")

    async def handle(request: web.Request) -> web.Response:
        found.sent.append((request.method, request.path_qs, dict(request.headers),
                           await request.read()))
        # Named like Stripe's answers: the SDK's telemetry keys on it.
        return web.json_response(found.body, status=found.status,
                                 headers={"Request-Id": f"req_{len(found.sent)}"})

    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://127.0.0.1:{port}"
    try:
        yield found
    finally:
        await runner.cleanup()


@pytest.fixture
async def on_recorder(recorder: Recorder) -> AsyncIterator[StripeGateway]:
    # A breaker that one failure opens, as above.
    made = StripeGateway(Settings.from_env({"STRIPE_API_BASE": recorder.url}),
                         budget=RequestBudget(1000.0), breaker=CircuitBreaker(1, 30.0))
    try:
        yield made
    finally:
        await made.close()


def payment(customer: str = "cus_1") -> PaymentRow:
    return PaymentRow(
        id="pay_1", merchant_id="mer_1", amount=1050, currency="usd",
        status=PaymentStatus.PENDING, customer=customer, payment_method="pm_card_visa",
        description=None, metadata={}, amount_refunded=0, stripe_payment_intent_id=None,
        failure_code=None, failure_message=None, created_at=datetime.now(UTC))


def pi_answer(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "pi_1", "object": "payment_intent", "status": status,
            "last_payment_error": None, "metadata": {"payment_id": "pay_1"},
            "charges": {"object": "list", "data": []}, **fields}


@pytest.mark.parametrize("customer", ["cus_1", "merchant-own-id"])
async def test_a_payment_intent_create_sends_what_the_sdk_service_sends(
        recorder: Recorder, on_recorder: StripeGateway, customer: str) -> None:
    recorder.body = pi_answer("succeeded")
    made = await on_recorder.create_payment_intent(payment(customer))
    assert made == StripeObject(id="pi_1", status="succeeded")
    # What the gateway sent before it asked for the raw answer: the service's create.
    params: dict[str, Any] = {
        "amount": 1050, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
        "metadata": {"payment_id": "pay_1", "merchant_id": "mer_1", "customer": customer}}
    if customer.startswith("cus_"):
        params["customer"] = customer
    await on_recorder._client.v1.payment_intents.create_async(
        params=params, options={"idempotency_key": "paystream-payment_intent-pay_1"})
    raw, service = recorder.sent
    assert raw == service
    method, path, headers, body = raw
    assert (method, path) == ("POST", "/v1/payment_intents")
    assert headers["Idempotency-Key"] == "paystream-payment_intent-pay_1"
    assert headers["Authorization"] == f"Bearer {Settings().stripe_api_key}"
    form = parse_qs(body.decode())
    assert form["metadata[payment_id]"] == ["pay_1"] and form["confirm"] == ["true"]
    assert ("customer" in form) is customer.startswith("cus_")


async def test_no_telemetry_goes_to_stripe(recorder: Recorder,
                                           on_recorder: StripeGateway) -> None:
    recorder.body = pi_answer("succeeded")
    for _ in range(2):
        await on_recorder.create_payment_intent(payment())
    for _, _, headers, _ in recorder.sent:
        assert "X-Stripe-Client-Telemetry" not in headers
        agent = json.loads(headers["X-Stripe-Client-User-Agent"])
        assert "telemetry_id" not in agent and "platform" not in agent


async def test_a_refund_create_sends_what_the_sdk_service_sends(
        recorder: Recorder, on_recorder: StripeGateway) -> None:
    recorder.body = {"id": "re_1", "object": "refund", "status": "failed",
                     "failure_reason": "expired_or_canceled_card"}
    refund = RefundRow(id="ref_1", payment_id="pay_1", merchant_id="mer_1", amount=500,
                       currency="usd", status=RefundStatus.PENDING, stripe_refund_id=None,
                       failure_code=None, failure_message=None, created_at=datetime.now(UTC))
    made = await on_recorder.create_refund(refund, "pi_1")
    assert made == StripeObject(id="re_1", status="failed",
                                failure_code="expired_or_canceled_card")
    await on_recorder._client.v1.refunds.create_async(
        params={"payment_intent": "pi_1", "amount": 500,
                "metadata": {"refund_id": "ref_1", "payment_id": "pay_1"}},
        options={"idempotency_key": "paystream-refund-ref_1"})
    raw, service = recorder.sent
    assert raw == service and raw[:2] == ("POST", "/v1/refunds")


async def test_a_payment_intent_answer_with_an_error_keeps_its_code(
        recorder: Recorder, on_recorder: StripeGateway) -> None:
    recorder.body = pi_answer("requires_payment_method", last_payment_error={
        "code": "card_declined", "message": "Your card was declined."})
    made = await on_recorder.create_payment_intent(payment())
    assert made == StripeObject(id="pi_1", status="requires_payment_method",
                                failure_code="card_declined",
                                failure_message="Your card was declined.")


async def test_a_declined_create_is_rejected_with_the_payment_intent_stripe_made(
        recorder: Recorder, on_recorder: StripeGateway) -> None:
    recorder.status = 402
    recorder.body = {"error": {
        "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
        "message": "Your card was declined.",
        "payment_intent": pi_answer("requires_payment_method")}}
    with pytest.raises(StripeRejected) as raised:
        await on_recorder.create_payment_intent(payment())
    assert (raised.value.code, raised.value.stripe_id) == ("card_declined", "pi_1")
    assert on_recorder.breaker.state is CircuitState.CLOSED


async def test_a_create_answered_5xx_is_unavailable_and_counts_against_the_breaker(
        recorder: Recorder, on_recorder: StripeGateway) -> None:
    recorder.status = 500
    recorder.body = {"error": {"type": "api_error", "message": "Something went wrong."}}
    with pytest.raises(StripeUnavailable):
        await on_recorder.create_payment_intent(payment())
    assert len(recorder.sent) == 1  # no retry of the SDK's: the poller's, with backoff
    assert on_recorder.breaker.state is CircuitState.OPEN
