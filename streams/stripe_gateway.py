"""The Stripe port: PaymentIntents and Refunds through the stripe SDK, behind a circuit breaker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe

from paystream.domain import stripe_idempotency_key
from paystream.settings import Settings

from . import metrics
from .errors import CircuitOpen, StripeRejected, StripeUnavailable
from .records import PaymentRow, RefundRow
from .resilience import CircuitBreaker, CircuitState

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    """Every Stripe call we make, mapped to our errors, counted, and guarded by a breaker."""

    def __init__(self, settings: Settings, *, breaker: CircuitBreaker | None = None) -> None:
        self._http = stripe.AIOHTTPClient(timeout=settings.stripe_timeout_seconds)
        # No SDK retries: the poller retries with backoff, and localstripe would
        # turn a retried create into a second PaymentIntent (it ignores Idempotency-Key).
        self._client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses={"api": settings.stripe_api_base},
            http_client=self._http,
            max_network_retries=0,
        )
        self.breaker = breaker or CircuitBreaker(
            settings.circuit_failure_threshold, settings.circuit_reset_seconds
        )

    async def close(self) -> None:
        await self._http.close_async()

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            metrics.STRIPE_CALLS.labels(operation, "circuit_open").inc()
            raise CircuitOpen(operation=operation, retry_in=self.breaker.retry_in())
        try:
            result = await fn()
        except stripe.CardError as err:
            self.breaker.success()  # a decline is a healthy answer
            metrics.STRIPE_CALLS.labels(operation, "declined").inc()
            error = err.error
            pi = getattr(error, "payment_intent", None) if error is not None else None
            raise StripeRejected(
                err.user_message or str(err.user_message or "card declined"),
                operation=operation,
                code=err.code or "card_declined",
                stripe_id=pi["id"] if pi else None,
            ) from None
        except (stripe.RateLimitError, stripe.APIConnectionError, stripe.AuthenticationError,
                stripe.PermissionError, asyncio.TimeoutError) as err:
            self._failed(operation)
            raise StripeUnavailable(f"{type(err).__name__}: {_short(err)}",
                                    operation=operation) from None
        except stripe.InvalidRequestError as err:
            self.breaker.success()
            metrics.STRIPE_CALLS.labels(operation, "rejected").inc()
            raise StripeRejected(_short(err), operation=operation,
                                 code=err.code or "invalid_request") from None
        except stripe.StripeError as err:
            # APIError and anything unknown: 5xx and friends, worth a retry.
            self._failed(operation)
            raise StripeUnavailable(f"{type(err).__name__}: {_short(err)}",
                                    operation=operation) from None
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        metrics.CIRCUIT_STATE.set(0)
        metrics.STRIPE_CALLS.labels(operation, "ok").inc()
        return result

    def _failed(self, operation: str) -> None:
        self.breaker.failure()
        metrics.STRIPE_CALLS.labels(operation, "error").inc()
        metrics.CIRCUIT_STATE.set(0 if self.breaker.state == CircuitState.CLOSED else 1)

    # --- PaymentIntents ------------------------------------------------------------

    async def create_payment_intent(self, payment: PaymentRow) -> StripeObject:
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
        options: dict[str, Any] = {
            "idempotency_key": stripe_idempotency_key("payment_intent", payment.id)
        }
        pi = await self._call(
            "payment_intent.create",
            lambda: self._client.v1.payment_intents.create_async(
                params=params, options=options  # type: ignore[arg-type]
            ),
        )
        return _payment_intent(pi)

    async def retrieve_payment_intent(self, pi_id: str) -> StripeObject:
        pi = await self._call(
            "payment_intent.retrieve",
            lambda: self._client.v1.payment_intents.retrieve_async(pi_id),
        )
        return _payment_intent(pi)

    async def find_payment_intent(self, payment_id: str, *, since: float) -> StripeObject | None:
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

        return await self._find("payment_intent.find", lookup)

    # --- Refunds -------------------------------------------------------------------

    async def create_refund(self, refund: RefundRow, payment_intent_id: str) -> StripeObject:
        params = {
            "payment_intent": payment_intent_id,
            "amount": refund.amount,
            "metadata": {"refund_id": refund.id, "payment_id": refund.payment_id},
        }
        options = {"idempotency_key": stripe_idempotency_key("refund", refund.id)}
        obj = await self._call(
            "refund.create",
            lambda: self._client.v1.refunds.create_async(
                params=params, options=options  # type: ignore[arg-type]
            ),
        )
        return _refund(obj)

    async def retrieve_refund(self, refund_id: str) -> StripeObject:
        obj = await self._call(
            "refund.retrieve", lambda: self._client.v1.refunds.retrieve_async(refund_id)
        )
        return _refund(obj)

    async def find_refund(self, refund_id: str, payment_intent_id: str) -> StripeObject | None:
        """The Refund an earlier attempt created for refund_id, listed by its PaymentIntent."""

        async def scan() -> StripeObject | None:
            page = await self._client.v1.refunds.list_async(
                params={"payment_intent": payment_intent_id, "limit": _LIST_PAGE}
            )
            async for obj in page.auto_paging_iter():
                if _meta(obj, "refund_id") == refund_id:
                    return _refund(obj)
            return None

        return await self._find("refund.find", scan)

    async def _find(self, operation: str,
                    fn: Callable[[], Awaitable[StripeObject | None]]) -> StripeObject | None:
        # A look-up Stripe refuses says nothing about the payment: it must not fail
        # it, and without an answer creating again could charge twice. Retry later.
        try:
            return await self._call(operation, fn)
        except StripeRejected as err:
            raise StripeUnavailable(f"look-up refused: {err}", operation=operation,
                                    code=err.code) from None


def _short(err: BaseException) -> str:
    # Stripe's messages never contain the API key, but keep them one line and short.
    return " ".join(str(err).split())[:300]
