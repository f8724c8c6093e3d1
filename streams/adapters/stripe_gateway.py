"""The Stripe port: PaymentIntents and Refunds through the stripe SDK, behind a circuit breaker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import stripe

from paystream.domain import stripe_idempotency_key
from paystream.settings import Settings
from streams import metrics
from streams.adapters.stripe_errors import Health, Meaning, RateLimited, meaning, short
from streams.errors import CircuitOpen, StripeRejected, StripeUnavailable
from streams.resilience import CircuitBreaker, CircuitState, RequestBudget, backoff_delay
from streams.rows import PaymentRow, RefundRow

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long one call keeps retrying through 429s before the object is left for
# the poller (it stays pending; the breaker is not touched).
RATE_LIMIT_PATIENCE_SECONDS = 30.0

# The SDK's telemetry: each request carries the previous one's id and latency in a
# JSON header, and its user agent the platform and an id the SDK keeps in a file of
# the user's config directory, all for Stripe's own statistics. Nothing of ours reads
# them; building them is CPU on every call. (The SDK's setting, for the whole process.)
stripe.enable_telemetry = False

# Page size when looking up what an earlier attempt created (after a crash
# between "create" and "write back" only).
_LIST_PAGE = 100


@dataclass(frozen=True, slots=True)
class StripeObject:
    """What we keep from a PaymentIntent or Refund."""

    id: str
    status: str
    failure_code: str | None = None
    failure_message: str | None = None


def _payment_intent(pi: Any) -> StripeObject:
    error = pi["last_payment_error"] if "last_payment_error" in pi else None
    return StripeObject(
        id=pi["id"],
        status=pi["status"],
        failure_code=(error["code"] if error and "code" in error else None),
        failure_message=(error["message"] if error and "message" in error else None),
    )


def _refund(refund: Any) -> StripeObject:
    return StripeObject(
        id=refund["id"],
        status=refund["status"],
        failure_code=refund["failure_reason"] if "failure_reason" in refund else None,
    )


def _meta(obj: Any, key: str) -> str | None:
    # stripe 16 objects are not dicts: no .get(), only `in` and [].
    metadata = obj["metadata"] if "metadata" in obj else None
    return metadata[key] if metadata and key in metadata else None


def customer_param(customer: str) -> str | None:
    """Our customer string goes to Stripe only when it is a Stripe customer id.

    Merchants may identify customers by their own ids; Stripe answers 404 for
    those, so they travel in metadata instead.
    """
    return customer if customer.startswith("cus_") else None


class StripeGateway:
    """Every Stripe call we make: paid for from the request budget, mapped to our
    errors, counted, and guarded by a breaker."""

    def __init__(self, settings: Settings, *, budget: RequestBudget,
                 breaker: CircuitBreaker | None = None) -> None:
        # One pool as large as the calls we allow in flight: a call queued in
        # aiohttp's pool would spend its timeout waiting for a socket.
        self._http = stripe.AIOHTTPClient(
            timeout=settings.stripe_timeout_seconds,
            connector=aiohttp.TCPConnector(limit=settings.stripe_concurrency))
        # No SDK retries: a 429 is retried here, after the budget's pause; anything
        # else is the poller's to retry, with backoff (localstripe would turn a
        # retried create into a second PaymentIntent: it ignores Idempotency-Key).
        self._client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses={"api": settings.stripe_api_base},
            http_client=self._http,
            max_network_retries=0,
        )
        self.budget = budget
        self._slots = asyncio.Semaphore(settings.stripe_concurrency)
        self.in_flight = 0
        self.breaker = breaker or CircuitBreaker(
            settings.circuit_failure_threshold, settings.circuit_reset_seconds
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    def until_next_try(self, tries: int) -> float:
        """How long a caller that found Stripe unavailable tries times in a row waits:
        until the breaker lets a call through, plus a growing, jittered backoff."""
        return self.breaker.retry_in() + backoff_delay(tries, base=1.0, cap=8.0)

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]], *,
                    prepaid: bool = False, background: bool = False) -> T:
        """fn's answer; a 429 is waited out (the whole budget pauses) and tried again
        for up to RATE_LIMIT_PATIENCE_SECONDS. ``prepaid``: the caller already took
        this request's token from the budget; ``background``: its tokens come from the
        share no new payment is waiting for (the poller, a retry after an outage)."""
        give_up_at = time.monotonic() + RATE_LIMIT_PATIENCE_SECONDS
        refusals = 0
        while True:
            if not prepaid:
                await self.budget.take(background=background)
            prepaid = False
            try:
                return await self._once(operation, fn)
            except RateLimited as limited:
                refusals += 1
                wait = limited.retry_after or backoff_delay(refusals, base=0.5, cap=8.0)
                self.budget.pause(wait)
                if time.monotonic() + wait > give_up_at:
                    raise StripeUnavailable(
                        f"rate limited {refusals} times in a row: {limited.message}",
                        operation=operation, code="rate_limit", unsent=True) from None

    async def _once(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            metrics.STRIPE_CALLS.labels(operation, "circuit_open").inc()
            raise CircuitOpen(operation=operation, retry_in=self.breaker.retry_in())
        try:
            async with self._slots:
                self.in_flight += 1
                try:
                    result = await fn()
                finally:
                    self.in_flight -= 1
        except Exception as err:
            found = meaning(err)
            if found is None:
                self.breaker.release()
                raise
            self._count(operation, found, err)
            raise found.raise_as(err, operation) from None
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        metrics.CIRCUIT_STATE.set(0)
        metrics.STRIPE_CALLS.labels(operation, "ok").inc()
        return result

    def _count(self, operation: str, found: Meaning, err: Exception) -> None:
        if found.health is Health.FAILING:
            self._failed(operation)
            return
        if found.health is Health.HEALTHY:
            self.breaker.success()
            metrics.CIRCUIT_STATE.set(0)
        else:
            self.breaker.release()
        metrics.STRIPE_CALLS.labels(operation, found.outcome).inc()
        if found.logged:
            log.error("Stripe refused %s: %s", operation, short(err))

    def _failed(self, operation: str) -> None:
        opened = self.breaker.opened_count
        self.breaker.failure()
        if self.breaker.opened_count > opened:
            metrics.CIRCUIT_OPENINGS.inc()
        metrics.STRIPE_CALLS.labels(operation, "error").inc()
        metrics.CIRCUIT_STATE.set(0 if self.breaker.state == CircuitState.CLOSED else 1)

    async def _create(self, operation: str, path: str, params: dict[str, Any],
                      idempotency_key: str, *, prepaid: bool, background: bool) -> Any:
        """One create (a POST to path), keyed by our object's id so that Stripe answers
        a retry with the object the first attempt made; its answer as a plain dict.

        raw_request_async sends what the service's create_async would (same encoding,
        headers, Idempotency-Key, client options and retries, and the same stripe
        errors for a non-2xx answer) but leaves the answer as the decoded JSON instead
        of a tree of StripeObjects. We read three fields of it; building the tree was
        the largest single cost of a create in the SDK (~95 us of a ~0.45 ms call on
        bench/stripe_call_bench.py)."""

        async def create() -> Any:
            response = await self._client.raw_request_async(
                "post", path, **params, idempotency_key=idempotency_key)
            return response.data

        return await self._call(operation, create, prepaid=prepaid, background=background)

    # --- PaymentIntents ------------------------------------------------------------

    async def create_payment_intent(self, payment: PaymentRow, *, prepaid: bool = False,
                                    background: bool = False) -> StripeObject:
        """Create and confirm in one call, keyed by our payment id."""
        params: dict[str, Any] = {
            "amount": payment.amount,
            "currency": payment.currency,
            "payment_method": payment.payment_method,
            "confirm": True,
            "metadata": {"payment_id": payment.id, "merchant_id": payment.merchant_id,
                         "customer": payment.customer},
        }
        customer = customer_param(payment.customer)
        if customer:
            params["customer"] = customer
        pi = await self._create("payment_intent.create", "/v1/payment_intents", params,
                                stripe_idempotency_key("payment_intent", payment.id),
                                prepaid=prepaid, background=background)
        return _payment_intent(pi)

    async def retrieve_payment_intent(self, pi_id: str, *, prepaid: bool = False,
                                      background: bool = False) -> StripeObject:
        pi = await self._call(
            "payment_intent.retrieve",
            lambda: self._client.v1.payment_intents.retrieve_async(pi_id),
            prepaid=prepaid, background=background,
        )
        return _payment_intent(pi)

    async def find_payment_intent(self, payment_id: str, *, since: float,
                                  prepaid: bool = False,
                                  background: bool = False) -> StripeObject | None:
        """The PaymentIntent an earlier attempt made for payment_id, created after since."""

        async def lookup() -> StripeObject | None:
            try:
                found = await self._client.v1.payment_intents.search_async(
                    params={"query": f"metadata['payment_id']:'{payment_id}'"}
                )
                for pi in found.data:
                    return _payment_intent(pi)
                return None
            except stripe.InvalidRequestError:
                pass  # no search API (localstripe)
            # localstripe lists PaymentIntents oldest first and unfiltered, but
            # filters charges by creation time: an earlier attempt that charged
            # (or was declined) left one, with its PaymentIntent expanded.
            page = await self._client.v1.charges.list_async(params={
                "created": {"gt": int(since)}, "limit": _LIST_PAGE,
                "expand": ["data.payment_intent"]})
            async for charge in page.auto_paging_iter():
                expanded = charge["payment_intent"] if "payment_intent" in charge else None
                if expanded is not None and not isinstance(expanded, str) \
                        and _meta(expanded, "payment_id") == payment_id:
                    return _payment_intent(expanded)
            return None

        return await self._find("payment_intent.find", lookup, prepaid=prepaid,
                                background=background)

    # --- Refunds -------------------------------------------------------------------

    async def create_refund(self, refund: RefundRow, payment_intent_id: str, *,
                            prepaid: bool = False, background: bool = False) -> StripeObject:
        params = {
            "payment_intent": payment_intent_id,
            "amount": refund.amount,
            "metadata": {"refund_id": refund.id, "payment_id": refund.payment_id},
        }
        obj = await self._create("refund.create", "/v1/refunds", params,
                                 stripe_idempotency_key("refund", refund.id), prepaid=prepaid,
                                 background=background)
        return _refund(obj)

    async def retrieve_refund(self, refund_id: str, *, prepaid: bool = False,
                              background: bool = False) -> StripeObject:
        obj = await self._call(
            "refund.retrieve", lambda: self._client.v1.refunds.retrieve_async(refund_id),
            prepaid=prepaid, background=background,
        )
        return _refund(obj)

    async def find_refund(self, refund_id: str, payment_intent_id: str, *,
                          prepaid: bool = False,
                          background: bool = False) -> StripeObject | None:
        """The Refund an earlier attempt created for refund_id, listed by its PaymentIntent."""

        async def scan() -> StripeObject | None:
            page = await self._client.v1.refunds.list_async(
                params={"payment_intent": payment_intent_id, "limit": _LIST_PAGE}
            )
            async for obj in page.auto_paging_iter():
                if _meta(obj, "refund_id") == refund_id:
                    return _refund(obj)
            return None

        return await self._find("refund.find", scan, prepaid=prepaid, background=background)

    async def _find(self, operation: str,
                    fn: Callable[[], Awaitable[StripeObject | None]], *,
                    prepaid: bool, background: bool) -> StripeObject | None:
        # A look-up Stripe refuses says nothing about the payment: it must not fail
        # it, and without an answer creating again could charge twice. Retry later.
        try:
            return await self._call(operation, fn, prepaid=prepaid, background=background)
        except StripeRejected as err:
            raise StripeUnavailable(f"look-up refused: {err}", operation=operation,
                                    code=err.code) from None
