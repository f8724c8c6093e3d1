"""What the Stripe sequence needs from Stripe and from its submissions store, as ports.

The sequence's double-charge guards live in how it uses these two: in
production they are the StripeGateway and the ``stripe_submissions`` table
(PostgresSubmissions); the unit tests hand it in-memory fakes instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from streams.adapters import postgres
from streams.adapters.postgres import Claim, WriteBack
from streams.adapters.stripe_gateway import StripeObject
from streams.resilience import CircuitBreaker, RequestBudget
from streams.rows import PaymentRow, RefundRow
from streams.runtime import Runtime


class StripePort(Protocol):
    """Stripe's PaymentIntents and Refunds, paid for from ``budget`` and guarded by
    ``breaker``. ``prepaid``: the caller already took the request's budget token;
    ``background``: spend only the budget no new payment is waiting for."""

    @property
    def breaker(self) -> CircuitBreaker: ...

    @property
    def budget(self) -> RequestBudget: ...

    def until_next_try(self, tries: int) -> float: ...

    async def create_payment_intent(self, payment: PaymentRow, *, prepaid: bool = False,
                                    background: bool = False) -> StripeObject: ...

    async def retrieve_payment_intent(self, pi_id: str, *, prepaid: bool = False,
                                      background: bool = False) -> StripeObject: ...

    async def find_payment_intent(self, payment_id: str, *, since: float,
                                  prepaid: bool = False,
                                  background: bool = False) -> StripeObject | None: ...

    async def create_refund(self, refund: RefundRow, payment_intent_id: str, *,
                            prepaid: bool = False, background: bool = False) -> StripeObject: ...

    async def retrieve_refund(self, refund_id: str, *, prepaid: bool = False,
                              background: bool = False) -> StripeObject: ...

    async def find_refund(self, refund_id: str, payment_intent_id: str, *,
                          prepaid: bool = False,
                          background: bool = False) -> StripeObject | None: ...


class Submissions(Protocol):
    """Leases on calling Stripe for an object, and the answers written back."""

    async def claim(self, object_type: str, ids: Sequence[str],
                    lease_seconds: float) -> dict[str, Claim]:
        """The leases taken, by id: only for objects still claimable and not leased by
        another caller (postgres.claim_submissions)."""
        ...

    async def write_back(self, items: Sequence[WriteBack]) -> list[bool]:
        """Each answer's guarded move, Stripe id and lease release; for each, whether its
        row moved (postgres.write_back)."""
        ...


class PostgresSubmissions:
    """The ``stripe_submissions`` table and the guarded UPDATEs, through the worker's pool."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def claim(self, object_type: str, ids: Sequence[str],
                    lease_seconds: float) -> dict[str, Claim]:
        return await self._runtime.with_db(
            lambda conn: postgres.claim_submissions(conn, object_type, ids, lease_seconds),
            what=f"{object_type} claims")

    async def write_back(self, items: Sequence[WriteBack]) -> list[bool]:
        return await self._runtime.with_db(lambda conn: postgres.write_back(conn, items),
                                           what="write-back")
