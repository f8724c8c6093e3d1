"""Bearer API keys: who is calling (by the key's sha256), and the per-key rate limit."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import RedisError

from api.errors import AuthenticationFailed, RateLimited
from api.logs import warn_throttled
from api.merchants import hash_api_key
from api.state import MERCHANT, MERCHANT_CACHE, METRICS, PRIMARY, RATE_LIMITER, Merchant

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Routes anyone may call: probes, docs, and Stripe (which signs instead).
PUBLIC_PATHS = frozenset(
    {"/health", "/live", "/ready", "/metrics", "/openapi.json", "/v1/webhooks/stripe"}
)
# A merchant found by its key is trusted this long without asking the primary again.
CACHE_SECONDS = 60.0
CACHE_MAX_ENTRIES = 10_000


def bearer_key(header: str | None) -> str:
    """The key from ``Authorization: Bearer <key>``, or AuthenticationFailed."""
    if not header:
        raise AuthenticationFailed(
            "You did not provide an API key. Use 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise AuthenticationFailed(
            "Invalid Authorization header. Use 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    return key


async def authenticate(request: web.Request) -> tuple[Merchant, str]:
    """The merchant owning the request's key, and the key's hash."""
    key_hash = hash_api_key(bearer_key(request.headers.get("Authorization")))
    cache = request.app[MERCHANT_CACHE]
    now = time.monotonic()
    cached = cache.get(key_hash)
    if cached is not None and cached[1] > now:
        return cached[0], key_hash
    # The primary, not a replica: a merchant created a moment ago must work at once.
    async with request.app[PRIMARY].connection() as conn:
        cur = await conn.execute(
            "SELECT id, name FROM merchants WHERE api_key_hash = %s", (key_hash,)
        )
        row = await cur.fetchone()
    if row is None:
        # The key itself is never echoed or logged.
        raise AuthenticationFailed("Invalid API key provided.", code="invalid_api_key")
    merchant = Merchant(id=row[0], name=row[1])
    if len(cache) >= CACHE_MAX_ENTRIES:
        cache.clear()
    cache[key_hash] = (merchant, now + CACHE_SECONDS)
    return merchant, key_hash


async def check_rate_limit(request: web.Request, key_hash: str) -> None:
    try:
        retry_after = await request.app[RATE_LIMITER].hit(key_hash[:32])
    except RedisError as err:
        # Fail open: a Redis outage must not stop payments (Postgres guards money).
        request.app[METRICS].redis_errors.labels("rate_limit").inc()
        warn_throttled(log, "ratelimit", "rate limit unavailable, allowing requests: %s",
                       type(err).__name__)
        return
    if retry_after is not None:
        raise RateLimited(
            "Too many requests for this API key; slow down.",
            headers={"Retry-After": str(retry_after)},
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate and rate-limit every matched /v1 route except the Stripe webhook."""
    if (
        request.path in PUBLIC_PATHS
        or not request.path.startswith("/v1/")
        # Unknown paths and methods answer 404/405 without asking for a key.
        or request.match_info.http_exception is not None
    ):
        return await handler(request)
    merchant, key_hash = await authenticate(request)
    request[MERCHANT] = merchant
    await check_rate_limit(request, key_hash)
    return await handler(request)
