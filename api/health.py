"""Probes and operational endpoints: /health, /live, /ready, /metrics, /openapi.json."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import AsyncConnectionPool

from api.errors import json_response
from api.openapi import openapi_document
from api.state import METRICS, PRIMARY, REDIS, REPLICA

CHECK_TIMEOUT_SECONDS = 1.0


async def live(request: web.Request) -> web.Response:
    """The process answers; nothing else is checked (a restart would not help anything else)."""
    return json_response({"status": "ok"})


async def health(request: web.Request) -> web.Response:
    """The API is serving (what `make up` waits for); dependencies are /ready's business."""
    return json_response({"status": "ok", "service": "paystream-api"})


async def _database(request: web.Request, key: web.AppKey[AsyncConnectionPool]) -> str:
    try:
        async with request.app[key].connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
            await asyncio.wait_for(conn.execute("SELECT 1"), CHECK_TIMEOUT_SECONDS)
        return "ok"
    except Exception as err:  # any failure means "not reachable"; the kind is enough
        return f"unavailable ({type(err).__name__})"


async def _redis(request: web.Request) -> str:
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), CHECK_TIMEOUT_SECONDS)
        return "ok"
    except Exception as err:
        return f"unavailable ({type(err).__name__})"


async def ready(request: web.Request) -> web.Response:
    """Ready when the primary and Redis answer; replicas are reported but optional
    (reads fall back to the primary)."""
    primary, redis, replicas = await asyncio.gather(
        _database(request, PRIMARY), _redis(request), _database(request, REPLICA)
    )
    checks = {"primary": primary, "redis": redis, "replicas": replicas}
    ok = primary == "ok" and redis == "ok"
    return json_response(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status=200 if ok else 503,
        headers=None if ok else {"Retry-After": "1"},
    )


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[METRICS].exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
