"""The operator console: one page under /console/ and a proxy running its panels' PromQL.

Who may reach it is decided before any handler here runs (api/console_auth.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from api.console_queries import QueryRefused, checked_params, load_allowed
from api.errors import json_response
from api.state import CONSOLE_HTTP, CONSOLE_QUERIES, SETTINGS

ASSETS = Path(__file__).with_name("console")
# What the pages load besides their HTML: scripts, style, panels.
FILES = {
    "console.js": "text/javascript",
    "payment.js": "text/javascript",
    "console.css": "text/css",
    "panels.json": "application/json",
}
# Prometheus' query endpoints, nothing else: the proxy can never write, reload or delete.
PROXIED = frozenset({"query", "query_range", "alerts"})
PROMETHEUS_TIMEOUT_SECONDS = 10.0
# Prometheus is told to give up first, so a slow query ends in Prometheus (its
# own timeout error) rather than running on after we stopped waiting.
PROMETHEUS_EVALUATION_TIMEOUT = "8s"
# Plenty for any query the page makes; keeps a crafted URL from being forwarded whole.
MAX_QUERY_CHARS = 4096


async def console_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the panels' queries the proxy allows, and its client for Prometheus."""
    app[CONSOLE_QUERIES] = load_allowed()
    timeout = aiohttp.ClientTimeout(total=PROMETHEUS_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[CONSOLE_HTTP] = session
        yield


async def redirect(request: web.Request) -> web.StreamResponse:
    # Relative asset URLs resolve under /console/ only with the slash.
    raise web.HTTPFound("/console/")


async def page(request: web.Request) -> web.FileResponse:
    return page_file("index.html")


def page_file(name: str) -> web.FileResponse:
    """One of the console's HTML pages (index.html, payment.html)."""
    return _file(name, "text/html")


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return _file(name, FILES[name])


def _file(name: str, content_type: str) -> web.FileResponse:
    # The page is small and changes with the code: always revalidate.
    return web.FileResponse(ASSETS / name, headers={"Content-Type": content_type,
                                                    "Cache-Control": "no-cache"})


async def prometheus(request: web.Request) -> web.Response:
    """GET /console/api/v1/{endpoint}: Prometheus' answer to one of the panels' queries."""
    endpoint = request.match_info["endpoint"]
    if endpoint not in PROXIED:
        raise web.HTTPNotFound()
    if len(request.query_string) > MAX_QUERY_CHARS:
        return _error("the query is too long", kind="bad_data", status=400)
    try:
        params = checked_params(endpoint, request.query, request.app[CONSOLE_QUERIES])
    except QueryRefused as err:
        return _error(str(err), kind="forbidden", status=403)
    if endpoint != "alerts":
        params["timeout"] = PROMETHEUS_EVALUATION_TIMEOUT
    url = f"{request.app[SETTINGS].prometheus_url}/api/v1/{endpoint}"
    try:
        async with request.app[CONSOLE_HTTP].get(url, params=params) as resp:
            body = await resp.read()
            return web.Response(body=body, status=resp.status,
                                content_type="application/json",
                                headers={"Cache-Control": "no-store"})
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        return _error(f"Prometheus does not answer ({type(err).__name__})",
                      kind="unavailable", status=502)


def _error(message: str, *, kind: str, status: int) -> web.Response:
    # Prometheus' own error shape, which is what the page reads.
    return json_response({"status": "error", "errorType": kind, "error": message},
                         status=status)
