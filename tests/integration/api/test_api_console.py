"""The console is for operators only, and its Prometheus proxy runs only the panels' queries.

Without an operator credential every /console path (page, files, proxy, and
paths not routed yet such as a payment's trace page) answers 401, or sends a
browser to the login form; a merchant key is no operator key; the login form
sets a strict HttpOnly session that logout or revocation ends.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from api.merchants import NewMerchant
from api.operators import INSERT_OPERATOR, NewOperator
from paystream.settings import Settings
from testkit.ports import free_port
from testkit.rows import create_merchant
from tests.integration.api.api_helpers import start_api

PANELS = json.loads((Path(__file__).resolve().parents[3] / "api" / "console" / "panels.json")
                    .read_text())
# One stat's and one chart's query, as the page sends them.
STAT_QUERY = PANELS["stats"][0]["expr"]
CHART_QUERY = PANELS["panels"][0]["queries"][0]["expr"]
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
COOKIE = "paystream_console"


async def new_operator(db: psycopg.AsyncConnection) -> NewOperator:
    operator = NewOperator(name=f"console-test-{time.monotonic_ns()}")
    await db.execute(INSERT_OPERATOR, operator.row())
    return operator


@pytest.fixture(name="operator", scope="module")
async def operator_fixture(db: psycopg.AsyncConnection) -> AsyncIterator[NewOperator]:
    operator = await new_operator(db)
    yield operator
    await db.execute("UPDATE operators SET revoked_at = now() WHERE id = %s", (operator.id,))


@pytest.fixture(name="merchant", scope="module")
async def merchant_fixture(db: psycopg.AsyncConnection) -> NewMerchant:
    return await create_merchant(db, "Not An Operator")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def log_in(client: TestClient, key: str, next_page: str | None = None) -> tuple[str, str]:
    """The session id the login form sets, and where it sends the browser."""
    params = {} if next_page is None else {"next": next_page}
    resp = await client.post("/console/login", data={"key": key}, params=params,
                             allow_redirects=False)
    assert resp.status == 303, await resp.text()
    # The jar stays empty: each test says which cookie it sends.
    client.session.cookie_jar.clear()
    return resp.cookies[COOKIE].value, resp.headers["Location"]


def session(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


GUARDED = ["/console", "/console/", "/console/console.js", "/console/panels.json",
           "/console/api/v1/alerts", f"/console/api/v1/query?query={STAT_QUERY}",
           "/console/api/v1/targets", "/console/payments/pay_123", "/console/anything"]


@pytest.mark.parametrize("path", GUARDED)
async def test_without_an_operator_everything_is_401(client: TestClient, path: str) -> None:
    resp = await client.get(path, allow_redirects=False)
    body = await resp.json()
    assert resp.status == 401, body
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "operator_required"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("path", "login"), [
    ("/console/", "/console/login"),
    ("/console", "/console/login"),
    ("/console/payments/pay_123", "/console/login?next=/console/payments/pay_123"),
])
async def test_a_browser_is_sent_to_the_login_form(client: TestClient, path: str,
                                                   login: str) -> None:
    resp = await client.get(path, headers=HTML, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, login)
    # The proxy is never a page: a browser fetching it gets the 401 the script handles.
    proxied = await client.get("/console/api/v1/alerts", headers=HTML, allow_redirects=False)
    assert proxied.status == 401
    form = await client.get("/console/login")
    assert form.status == 200 and form.content_type == "text/html"
    assert 'name="key"' in await form.text()


async def test_a_merchant_key_is_not_an_operator_key(client: TestClient,
                                                     merchant: NewMerchant) -> None:
    for path in ("/console/", f"/console/api/v1/query?query={STAT_QUERY}"):
        resp = await client.get(path, headers=bearer(merchant.api_key), allow_redirects=False)
        assert resp.status == 401, path
    resp = await client.post("/console/login", data={"key": merchant.api_key},
                             allow_redirects=False)
    assert resp.status == 401 and COOKIE not in resp.cookies
    assert "not an operator key" in await resp.text()


async def test_an_operator_key_is_not_a_merchant_key(client: TestClient,
                                                     operator: NewOperator) -> None:
    resp = await client.get("/v1/balances", headers=bearer(operator.key))
    assert resp.status == 401


async def test_the_page_and_its_files_with_an_operator_key(client: TestClient,
                                                           operator: NewOperator) -> None:
    auth = bearer(operator.key)
    resp = await client.get("/console", headers=auth, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/console/"
    page = await client.get("/console/", headers=auth)
    assert page.status == 200 and page.content_type == "text/html"
    assert 'src="console.js"' in await page.text()
    script = await client.get("/console/console.js", headers=auth)
    assert script.status == 200 and script.content_type == "text/javascript"
    panels = await (await client.get("/console/panels.json", headers=auth)).json()
    assert {p["id"] for p in panels["panels"]} >= {"payments", "latency", "lag", "stripe"}
    for path in ("/console/app.py", "/console/..%2Fapp.py", "/console/index"):
        assert (await client.get(path, headers=auth)).status == 404, path


async def test_login_sets_a_strict_httponly_session(client: TestClient,
                                                    operator: NewOperator) -> None:
    resp = await client.post("/console/login", data={"key": operator.key},
                             allow_redirects=False)
    client.session.cookie_jar.clear()
    assert (resp.status, resp.headers["Location"]) == (303, "/console/")
    cookie = SimpleCookie(resp.headers["Set-Cookie"])[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert cookie["path"] == "/console" and int(cookie["max-age"]) > 0
    assert not cookie["secure"]  # plain http here; see the TLS case below
    page = await client.get("/console/", headers=session(cookie.value))
    assert page.status == 200
    query = await client.get("/console/api/v1/query", params={"query": STAT_QUERY},
                             headers=session(cookie.value))
    assert query.status == 200 and (await query.json())["status"] == "success"
    # Behind a proxy that ends TLS, the cookie is https-only.
    tls = await client.post("/console/login", data={"key": operator.key},
                            headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    client.session.cookie_jar.clear()
    assert SimpleCookie(tls.headers["Set-Cookie"])[COOKIE]["secure"]


@pytest.mark.parametrize(("next_page", "location"), [
    ("/console/payments/pay_123", "/console/payments/pay_123"),
    ("https://evil.example/console/", "/console/"),
    ("//evil.example/console/", "/console/"),
    ("/v1/payments", "/console/"),
])
async def test_login_returns_only_into_the_console(client: TestClient, operator: NewOperator,
                                                   next_page: str, location: str) -> None:
    _, sent_to = await log_in(client, operator.key, next_page)
    assert sent_to == location


async def test_login_from_another_site_is_refused(client: TestClient,
                                                  operator: NewOperator) -> None:
    resp = await client.post("/console/login", data={"key": operator.key},
                             headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert resp.status == 403 and COOKIE not in resp.cookies


async def test_logout_ends_the_session(client: TestClient, operator: NewOperator) -> None:
    value, _ = await log_in(client, operator.key)
    assert (await client.get("/console/", headers=session(value))).status == 200
    resp = await client.post("/console/logout", headers=session(value), allow_redirects=False)
    client.session.cookie_jar.clear()
    assert (resp.status, resp.headers["Location"]) == (303, "/console/login")
    assert (await client.get("/console/", headers=session(value))).status == 401
    assert (await client.get("/console/", headers=session("made-up"))).status == 401


async def test_an_expired_session_is_over(client: TestClient, operator: NewOperator,
                                          db: psycopg.AsyncConnection) -> None:
    value, _ = await log_in(client, operator.key)
    await db.execute("UPDATE operator_sessions SET expires_at = now() - interval '1 second' "
                     "WHERE operator_id = %s", (operator.id,))
    assert (await client.get("/console/", headers=session(value))).status == 401


async def test_a_revoked_operator_loses_key_and_sessions(client: TestClient,
                                                         db: psycopg.AsyncConnection) -> None:
    operator = await new_operator(db)
    value, _ = await log_in(client, operator.key)
    assert (await client.get("/console/", headers=bearer(operator.key))).status == 200
    assert (await client.get("/console/", headers=session(value))).status == 200
    # What `paystream operator revoke` runs (its own test drives the command).
    await db.execute("UPDATE operators SET revoked_at = now() WHERE id = %s", (operator.id,))
    assert (await client.get("/console/", headers=bearer(operator.key))).status == 401
    assert (await client.get("/console/", headers=session(value))).status == 401


async def test_the_panels_queries_pass_through(client: TestClient,
                                               operator: NewOperator) -> None:
    auth = bearer(operator.key)
    resp = await client.get("/console/api/v1/query", params={"query": STAT_QUERY}, headers=auth)
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "success", body
    assert resp.headers["Cache-Control"] == "no-store"
    end = int(time.time())
    ranged = await client.get("/console/api/v1/query_range", headers=auth, params={
        "query": CHART_QUERY, "start": str(end - 900), "end": str(end), "step": "10"})
    assert ranged.status == 200 and (await ranged.json())["status"] == "success"
    alerts = await (await client.get("/console/api/v1/alerts", headers=auth)).json()
    assert alerts["status"] == "success"


@pytest.mark.parametrize("query", [
    'count_over_time({__name__=~".+"}[1h])', "up", "up(", "", f"{STAT_QUERY} ",
])
async def test_any_other_promql_is_refused(client: TestClient, operator: NewOperator,
                                           query: str) -> None:
    for endpoint in ("query", "query_range"):
        resp = await client.get(f"/console/api/v1/{endpoint}", headers=bearer(operator.key),
                                params={"query": query, "start": "0", "end": "60", "step": "10"})
        body = await resp.json()
        assert resp.status == 403, body
        assert body["status"] == "error" and "not one of the console's panels" in body["error"]


async def test_a_panel_query_over_a_range_the_page_never_asks_is_refused(
        client: TestClient, operator: NewOperator) -> None:
    end = int(time.time())
    for start, step in ((end - 90 * 86400, 3600), (end - 3600, 0.1), (end + 60, 10)):
        resp = await client.get("/console/api/v1/query_range", headers=bearer(operator.key),
                                params={"query": CHART_QUERY, "start": str(start),
                                        "end": str(end), "step": str(step)})
        assert resp.status == 403, (start, step)
        assert (await resp.json())["status"] == "error"


async def test_nothing_but_queries_is_forwarded(client: TestClient,
                                                operator: NewOperator) -> None:
    auth = bearer(operator.key)
    for path in ("/console/api/v1/targets", "/console/api/v1/admin/tsdb/delete_series",
                 "/console/api/v1/status/config", "/console/api/v2/query"):
        assert (await client.get(path, headers=auth)).status == 404, path
    posted = await client.post("/console/api/v1/query", data={"query": STAT_QUERY},
                               headers=auth)
    assert posted.status == 405
    long = await client.get("/console/api/v1/query", params={"query": "up" + " " * 5000},
                            headers=auth)
    assert long.status == 400 and (await long.json())["status"] == "error"


async def test_prometheus_down_is_a_json_502(settings: Settings, operator: NewOperator) -> None:
    nowhere = dataclasses.replace(settings, prometheus_url=f"http://127.0.0.1:{free_port()}")
    client, _ = await start_api(nowhere)
    try:
        resp = await client.get("/console/api/v1/query", params={"query": STAT_QUERY},
                                headers=bearer(operator.key))
        body = await resp.json()
        assert resp.status == 502 and body["status"] == "error", body
    finally:
        await client.close()


async def test_login_takes_only_a_form(client: TestClient, operator: NewOperator) -> None:
    for headers, body in (({"Content-Type": "multipart/form-data"}, b"key="),
                          ({"Content-Type": "application/json"},
                           json.dumps({"key": operator.key}).encode())):
        resp = await client.post("/console/login", data=body, headers=headers,
                                 allow_redirects=False)
        assert resp.status == 400 and COOKIE not in resp.cookies
        assert (await resp.json())["error"]["code"] == "invalid_content_type"
