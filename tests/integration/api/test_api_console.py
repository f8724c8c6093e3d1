"""The console's files and its Prometheus proxy: query endpoints only, read-only, errors as JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from api_fixtures import start_api
from conftest import free_port

from paystream.settings import Settings


@pytest.fixture(name="client", scope="module")
async def client_fixture(settings: Settings) -> AsyncIterator[TestClient]:
    client, _ = await start_api(settings)
    try:
        yield client
    finally:
        await client.close()


async def test_the_page_and_its_files(client: TestClient) -> None:
    resp = await client.get("/console", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/console/"
    page = await client.get("/console/")
    assert page.status == 200 and page.content_type == "text/html"
    assert 'src="console.js"' in await page.text()
    script = await client.get("/console/console.js")
    assert script.status == 200 and script.content_type == "text/javascript"
    panels = await (await client.get("/console/panels.json")).json()
    assert {p["id"] for p in panels["panels"]} >= {"payments", "latency", "lag", "stripe"}
    for path in ("/console/app.py", "/console/..%2Fapp.py", "/console/index"):
        assert (await client.get(path)).status == 404, path


async def test_prometheus_queries_pass_through(client: TestClient) -> None:
    resp = await client.get("/console/api/v1/query", params={"query": "up"})
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "success", body
    assert resp.headers["Cache-Control"] == "no-store"
    bad = await client.get("/console/api/v1/query", params={"query": "up("})
    assert bad.status == 400 and (await bad.json())["errorType"] == "bad_data"
    alerts = await (await client.get("/console/api/v1/alerts")).json()
    assert alerts["status"] == "success"


async def test_nothing_but_queries_is_forwarded(client: TestClient) -> None:
    for path in ("/console/api/v1/targets", "/console/api/v1/admin/tsdb/delete_series",
                 "/console/api/v1/status/config", "/console/api/v2/query"):
        assert (await client.get(path)).status == 404, path
    assert (await client.post("/console/api/v1/query", data={"query": "up"})).status == 405
    long = await client.get("/console/api/v1/query", params={"query": "up" + " " * 5000})
    assert long.status == 400 and (await long.json())["status"] == "error"


async def test_prometheus_down_is_a_json_502(settings: Settings) -> None:
    nowhere = dataclasses.replace(settings, prometheus_url=f"http://127.0.0.1:{free_port()}")
    client, _ = await start_api(nowhere)
    try:
        resp = await client.get("/console/api/v1/query", params={"query": "up"})
        body = await resp.json()
        assert resp.status == 502 and body["status"] == "error", body
    finally:
        await client.close()
