"""Exceptions raised by the stream processors.

    StreamsError                    something an agent could not do
    ├── DecodeError                 a message is not a change event we understand (poison)
    ├── StripeCallFailed            a call to Stripe did not give an answer we can act on
    │   ├── StripeUnavailable       outage, timeout, 5xx, 429, bad key: retry later,
    │   │   │                       the object stays non-terminal
    │   │   └── CircuitOpen         not even tried: the breaker is open after repeated failures
    │   └── StripeRejected          Stripe refused for good (card declined, invalid request):
    │                               the object becomes failed with ``code`` and ``message``

Agents dead-letter anything else (and DecodeError) with ``str(error)`` as the reason;
the Stripe errors drive state transitions instead. Context is in keyword-only arguments.
"""

from __future__ import annotations


class StreamsError(Exception):
    """Something a stream processor could not do."""


class DecodeError(StreamsError):
    """A message that is not a change event (or internal command) we understand."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StripeCallFailed(StreamsError):
    """A Stripe call without a usable answer."""

    def __init__(self, message: str, *, operation: str, code: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.code = code


class StripeUnavailable(StripeCallFailed):
    """Stripe could not be reached or answered with a transient error; try again later.

    ``unsent``: the request certainly never reached Stripe (nothing can have been
    created), as opposed to a timeout or a 5xx, after which it may have.
    """

    def __init__(self, message: str, *, operation: str, code: str | None = None,
                 unsent: bool = False) -> None:
        super().__init__(message, operation=operation, code=code)
        self.unsent = unsent


class CircuitOpen(StripeUnavailable):
    """The circuit breaker is open: Stripe was not called at all."""

    def __init__(self, *, operation: str, retry_in: float) -> None:
        super().__init__(
            f"circuit open, Stripe not called ({operation}); next probe in {retry_in:.1f}s",
            operation=operation,
            code="circuit_open",
            unsent=True,
        )
        self.retry_in = retry_in


class StripeRejected(StripeCallFailed):
    """Stripe refused the request for good: the payment or refund fails with this code."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        code: str,
        stripe_id: str | None = None,
    ) -> None:
        super().__init__(message, operation=operation, code=code)
        # The PaymentIntent or Refund Stripe created before refusing, when it says so.
        self.stripe_id = stripe_id
