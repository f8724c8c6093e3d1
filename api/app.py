"""The aiohttp application factory: settings in, a ready-to-run web.Application out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api.auth import auth_middleware
from api.console import console_ctx
from api.console_auth import console_guard
from api.db import database_ctx
from api.errors import error_middleware
from api.idempotency import IdempotencyStore
from api.metrics import Metrics, metrics_middleware
from api.ratelimit import RateLimiter
from api.routes import setup_routes
from api.state import (
    IDEMPOTENCY,
    MERCHANT_CACHE,
    METRICS,
    RATE_LIMITER,
    REDIS,
    SETTINGS,
)
from paystream.settings import Settings

# Redis answers in well under a millisecond here; when it does not answer at
# all, requests must not hang: they carry on without it (Postgres guards money).
REDIS_TIMEOUT_SECONDS = 0.5


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the Redis client with the rate limiter and idempotency store on it."""
    settings = app[SETTINGS]
    client = aioredis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        # One quick retry covers a dropped pooled connection; more would only add latency.
        retry=Retry(NoBackoff(), 1),
    )
    app[REDIS] = client
    app[RATE_LIMITER] = RateLimiter(client, settings.rate_limit_per_second)
    app[IDEMPOTENCY] = IdempotencyStore(client, settings.idempotency_ttl_seconds)
    try:
        yield
    finally:
        await client.aclose()


def create_app(settings: Settings) -> web.Application:
    """Build the API; pools and clients open on startup and close on cleanup."""
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # Outermost first: metrics see the final status the error middleware chose.
        # Merchants guard /v1, operators /console; each lets the other's paths pass.
        middlewares=[metrics_middleware(metrics), error_middleware, auth_middleware,
                     console_guard],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[MERCHANT_CACHE] = {}
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(console_ctx)
    setup_routes(app)
    return app
