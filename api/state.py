"""Typed keys for what the app and each request carry (aiohttp AppKey / RequestKey)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from api.idempotency import IdempotencyStore
from api.metrics import Metrics
from api.ratelimit import RateLimiter
from paystream.settings import Settings


@dataclass(frozen=True, slots=True)
class Merchant:
    """The authenticated caller; every query a handler runs is scoped to its id."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Operator:
    """Someone allowed into the operator console (api/console_auth.py)."""

    id: str
    name: str


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
PRIMARY = web.AppKey("primary", AsyncConnectionPool)
# Replicas through NGINX; reads fall back to PRIMARY when they lag or are down.
REPLICA = web.AppKey("replica", AsyncConnectionPool)
REDIS = web.AppKey("redis", Redis)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyStore)
# API key hash -> (merchant, monotonic expiry): saves a primary round trip per request.
MERCHANT_CACHE: web.AppKey[dict[str, tuple[Merchant, float]]] = web.AppKey("merchant_cache")
# The operator console's client for Prometheus (api/console.py).
CONSOLE_HTTP = web.AppKey("console_http", aiohttp.ClientSession)
# The PromQL the console's panels run: all its proxy forwards (api/console_queries.py).
CONSOLE_QUERIES: web.AppKey[frozenset[str]] = web.AppKey("console_queries")
# Set by the auth middleware before any /v1 handler runs.
MERCHANT = web.RequestKey("merchant", Merchant)
# Set by the console guard before any /console handler runs.
OPERATOR = web.RequestKey("operator", Operator)
