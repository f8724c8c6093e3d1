"""The worker's connections (Postgres pool, Stripe, HTTP), opened on first use, closed at stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from paystream.settings import Settings
from streams import metrics
from streams.adapters import postgres
from streams.adapters.stripe_gateway import StripeGateway
from streams.resilience import RequestBudget

# The blocklist table is read at most this often; a new entry applies within it.
BLOCKLIST_TTL_SECONDS = 5.0
# Database outages are waited out, not dead-lettered: the message is fine,
# and the consumer simply stops advancing until Postgres is back.
_DB_RETRY_MAX_DELAY = 5.0
TRANSIENT_DB_ERRORS = (psycopg.OperationalError, PoolTimeout)
T = TypeVar("T")
log = logging.getLogger(__name__)


async def retry_db(fn: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Run fn, retrying for as long as the database is unreachable."""
    delay = 0.1
    while True:
        try:
            return await fn()
        except TRANSIENT_DB_ERRORS as err:
            log.warning("%s: database unavailable (%s); retrying in %.1fs",
                        what, type(err).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _DB_RETRY_MAX_DELAY)


async def _configure(conn: AsyncConnection[Any]) -> None:
    # Autocommit first (a SET before it left the pool unable to initialise):
    # multi-statement work opens its own transaction.
    await conn.set_autocommit(True)


class Runtime:
    """Lazily opened resources shared by every agent, timer and view of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: AsyncConnectionPool | None = None
        self._gateway: StripeGateway | None = None
        self._http: aiohttp.ClientSession | None = None
        self._open_lock: asyncio.Lock | None = None
        self._blocklist: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self._blocklist_at = float("-inf")
        self._budget: RequestBudget | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def on_close(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run fn at shutdown, before the connections close."""
        self._closers.append(fn)

    def _lock(self) -> asyncio.Lock:
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        return self._open_lock

    async def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            async with self._lock():
                if self._pool is None:
                    pool = AsyncConnectionPool(
                        self.settings.database_url,
                        min_size=2,
                        max_size=10,
                        configure=_configure,
                        open=False,
                        name="streams",
                    )
                    await pool.open(wait=True, timeout=30)
                    self._pool = pool
        return self._pool

    @property
    def stripe(self) -> StripeGateway:
        if self._gateway is None:
            self._gateway = StripeGateway(self.settings, budget=self.stripe_budget)
            gateway = self._gateway
            metrics.STRIPE_IN_FLIGHT.set_function(lambda: gateway.in_flight)
        return self._gateway

    @property
    def stripe_budget(self) -> RequestBudget:
        """STRIPE_REQUESTS_PER_SECOND for every Stripe call of this worker."""
        if self._budget is None:
            budget = self._budget = RequestBudget(self.settings.stripe_requests_per_second)
            metrics.STRIPE_BUDGET_WAITING.set_function(lambda: budget.waiting)
        return self._budget

    async def with_db(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]], *,
                      what: str) -> T:
        """Run fn on a pooled connection, retrying while the database is unreachable."""

        async def run() -> T:
            pool = await self.pool()
            async with pool.connection() as conn:
                return await fn(conn)

        return await retry_db(run, what=what)

    async def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10),
                # Merchant endpoints are slow and many; do not let one hold every socket.
                connector=aiohttp.TCPConnector(limit=64, limit_per_host=16),
            )
        return self._http

    async def blocklist(self) -> tuple[frozenset[str], frozenset[str]]:
        """(customers, payment methods) from the fraud_blocklist table, cached briefly."""
        if time.monotonic() - self._blocklist_at > BLOCKLIST_TTL_SECONDS:
            pool = await self.pool()
            async with pool.connection() as conn:
                self._blocklist = await postgres.load_blocklist(conn)
            self._blocklist_at = time.monotonic()
        return self._blocklist

    async def close(self) -> None:
        for fn in self._closers:
            await fn()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._gateway is not None:
            await self._gateway.close()
            self._gateway = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
