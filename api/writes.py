"""The create endpoints' shared path: validated params, written at most once per key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from api import validation
from api.idempotency import Outcome, run_idempotent
from api.state import IDEMPOTENCY, MERCHANT, METRICS, PRIMARY, SETTINGS


class Fingerprinted(Protocol):
    def fingerprint(self) -> str: ...


P = TypeVar("P", bound=Fingerprinted)

# (primary pool, merchant id, params, idempotency key, fingerprint, key TTL in s) -> outcome
Insert = Callable[[AsyncConnectionPool, str, P, str | None, str, int], Awaitable[Outcome]]


async def create_once(request: web.Request, params: P, insert: Insert[P]) -> web.Response:
    """Run `insert` for the calling merchant under the request's Idempotency-Key."""
    merchant = request[MERCHANT]
    key = validation.idempotency_key(request.headers.get("Idempotency-Key"))
    fingerprint = params.fingerprint()
    pool = request.app[PRIMARY]
    ttl = request.app[SETTINGS].idempotency_ttl_seconds
    return await run_idempotent(
        request.app[IDEMPOTENCY],
        request.app[METRICS],
        merchant_id=merchant.id,
        idempotency_key=key,
        fingerprint=fingerprint,
        action=lambda: insert(pool, merchant.id, params, key, fingerprint, ttl),
    )
