"""The operator console in headless Chromium: an operator logs in, it loads clean, draws
data, shows a new payment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from testkit.waiting import eventually
from tests.e2e.monitoring.browser import DevToolsError, Page, chromium

ROOT = Path(__file__).resolve().parents[3]
PAYSTREAM = Path(sys.executable).parent / "paystream"
# Panels that draw from what every running stack has once a few payments went
# through; consumer-lag waits for the worker's paystream_consumer_lag_messages.
CORE_PANELS = ["payments", "latency", "lag", "stripe", "dlq", "replication", "slots",
               "open-payments", "api", "commits"]


def stack_dir() -> Path:
    return Path(os.environ.get("PAYSTREAM_STACK_DIR", ROOT / ".stack"))


def demo_key() -> str:
    """The key `make up` printed (README: "the demo merchant key make up printed")."""
    return str(json.loads((stack_dir() / "demo-merchant.json").read_text())["api_key"])


async def fresh_card(http: aiohttp.ClientSession) -> str:
    """A PaymentMethod of its own: a shared test card trips the per-card velocity rule."""
    form = {"type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12",
            "card[exp_year]": "2030", "card[cvc]": "123"}
    async with http.post(f"{os.environ['STRIPE_API_BASE']}/v1/payment_methods", data=form,
                         headers={"Authorization": f"Bearer {os.environ['STRIPE_API_KEY']}"}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["id"])


def create_with_curl(key: str, payment_method: str, customer: str) -> dict:
    """README's create command, through curl, as a person runs it."""
    body = {"amount": 2500, "currency": "usd", "customer": customer,
            "payment_method": payment_method, "description": "Order 1001"}
    out = subprocess.run(
        ["curl", "-s", f"{os.environ['API_URL']}/v1/payments",
         "-H", f"Authorization: Bearer {key}", "-H", f"Idempotency-Key: console-{uuid.uuid4()}",
         "-H", "Content-Type: application/json", "-d", json.dumps(body)],
        capture_output=True, text=True, timeout=30, check=True)
    created = json.loads(out.stdout)
    assert created.get("status") == "pending", created
    return created


@pytest.fixture(name="operator_key", scope="module")
def operator_key_fixture() -> Iterator[str]:
    """An operator of the test's own, made and revoked with README's commands."""
    made = subprocess.run([str(PAYSTREAM), "operator", "create", "--name",
                           f"console-test-{uuid.uuid4().hex[:8]}"],
                          capture_output=True, text=True, timeout=60, check=True)
    operator = json.loads(made.stdout)
    yield str(operator["operator_key"])
    subprocess.run([str(PAYSTREAM), "operator", "revoke", operator["id"]],
                   capture_output=True, timeout=60, check=True)


async def log_in(page: Page, key: str) -> None:
    """Type the key into the login form and submit it, as a person does."""
    await page.evaluate(f"""(() => {{
        document.querySelector("input[name=key]").value = {json.dumps(key)};
        document.querySelector("form").submit();
    }})()""")

    async def on_console() -> bool:
        try:
            return bool(await page.evaluate(
                "location.pathname === '/console/' && document.readyState === 'complete'"))
        except DevToolsError:
            return False  # asked while the page was being replaced

    await eventually(on_console, timeout=30, what="the console after logging in")


@pytest.fixture(name="page", scope="module")
async def page_fixture(tmp_path_factory: pytest.TempPathFactory,
                       operator_key: str) -> AsyncIterator[Page]:
    async with chromium(tmp_path_factory.mktemp("chromium")) as page:
        await page.goto(f"{os.environ['API_URL']}/console/")
        # Without a session, the console sends the browser to its login form.
        assert await page.evaluate("location.pathname") == "/console/login"
        await log_in(page, operator_key)
        yield page


async def refreshed(page: Page) -> int | None:
    """The time of the page's last completed refresh."""
    return await page.evaluate("window.paystreamConsole && window.paystreamConsole.updated")


async def test_console_loads_and_refreshes_itself(page: Page) -> None:
    first = await eventually(lambda: refreshed(page), timeout=30, what="first refresh")

    async def again() -> bool:
        return (await refreshed(page) or 0) > first

    await eventually(again, timeout=30, what="a second refresh")
    assert await page.evaluate("window.paystreamConsole.problem") is None
    assert await page.evaluate("window.paystreamConsole.stats.targets") > 0
    assert page.errors == []


async def test_the_session_cookie_is_out_of_the_scripts_reach(page: Page) -> None:
    await eventually(lambda: refreshed(page), timeout=30, what="first refresh")
    cookies = (await page.send("Network.getCookies",
                               urls=[f"{os.environ['API_URL']}/console/"]))["cookies"]
    [session] = [c for c in cookies if c["name"] == "paystream_console"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert session["path"] == "/console" and session["expires"] > time.time()
    assert "paystream_console" not in await page.evaluate("document.cookie")


async def test_a_readme_payment_shows_up_within_30_seconds(page: Page) -> None:
    async with aiohttp.ClientSession() as http:
        card = await fresh_card(http)
    started = time.time()
    create_with_curl(demo_key(), card, f"console-{uuid.uuid4().hex[:8]}")

    async def on_chart() -> bool:
        return bool(await page.evaluate(f"""(() => {{
            const panel = window.paystreamConsole.panels.payments;
            const created = panel && panel.series.find((s) => s.name === "created");
            return Boolean(created && created.points.some(([t, v]) => t >= {started} && v > 0));
        }})()"""))

    # A 5 s scrape, then a 5 s refresh; this test runs first on a fresh stack in CI,
    # where the "created" series must already exist at 0 for rate() to see the payment.
    await eventually(on_chart, timeout=30, interval=0.5, what="the payment on the payments chart")
    print(f"payment on the console's chart {time.time() - started:.1f}s after it was created")


async def test_charts_have_data_after_a_few_payments(page: Page) -> None:
    key = demo_key()
    async with aiohttp.ClientSession() as http:
        cards = [await fresh_card(http) for _ in range(3)]
        payments = [create_with_curl(key, card, f"console-{uuid.uuid4().hex[:8]}")
                    for card in cards]

        async def all_succeeded() -> bool:
            for payment in payments:
                async with http.get(f"{os.environ['API_URL']}/v1/payments/{payment['id']}",
                                    headers={"Authorization": f"Bearer {key}"}) as resp:
                    if (await resp.json())["status"] != "succeeded":
                        return False
            return True

        await eventually(all_succeeded, timeout=90, interval=0.5, what="payments succeeded")

    empty = list(CORE_PANELS)

    async def drawn() -> bool:
        counts = await page.evaluate(
            "Object.fromEntries(Object.entries(window.paystreamConsole.panels)"
            ".map(([id, p]) => [id, p.points]))")
        empty[:] = [panel for panel in CORE_PANELS if not counts.get(panel)]
        return not empty

    try:
        await eventually(drawn, timeout=60, interval=1, what="data in every core chart")
    except AssertionError as err:
        raise AssertionError(f"charts without data: {empty}") from err
    # What the DOM shows, not only what the script holds.
    svg_paths = await page.evaluate("document.querySelectorAll('.panel svg path.series').length")
    assert svg_paths >= len(CORE_PANELS)
    assert page.errors == []


async def test_screenshot_is_kept(page: Page, capsys: pytest.CaptureFixture[str]) -> None:
    path = await page.screenshot(stack_dir() / "artifacts" / "console.png")
    assert path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with capsys.disabled():
        print(f"\n  console screenshot: {path}")
    assert page.errors == []


async def test_logging_out_ends_the_session(page: Page) -> None:
    await page.evaluate('document.querySelector("header form button").click()')

    async def on_login_form() -> bool:
        try:
            return bool(await page.evaluate(
                "location.pathname === '/console/login' && document.readyState === 'complete'"))
        except DevToolsError:
            return False

    await eventually(on_login_form, timeout=30, what="the login form after logging out")
    assert await page.evaluate('fetch("/console/api/v1/alerts").then((r) => r.status)') == 401
