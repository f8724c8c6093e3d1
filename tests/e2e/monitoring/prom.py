"""A small client of Prometheus' HTTP API for the monitoring tests (PROMETHEUS_URL, make env)."""

from __future__ import annotations

import os
from typing import Any

import aiohttp


def prometheus_url() -> str:
    return os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:9090").rstrip("/")


async def api(endpoint: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{prometheus_url()}/api/v1/{endpoint}", params=params) as resp:
            body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]


async def query(expr: str) -> list[dict[str, Any]]:
    return list((await api("query", query=expr))["result"])


async def alerts(name: str) -> list[dict[str, Any]]:
    """This alert's instances now (pending or firing); empty when it is inactive."""
    return [a for a in (await api("alerts"))["alerts"] if a["labels"].get("alertname") == name]
