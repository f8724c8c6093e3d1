"""The console's payment page in headless Chromium: an operator finds a payment by its id and
sees its path, its rows and what it waits for; nobody else does.

Payments are made through the stack's API by a merchant of the test's own, with a
webhook URL served here so the path runs to "merchant notified". Run with `-s` to
see where the screenshot of a succeeded payment's page was kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from testkit.ports import free_port
from testkit.waiting import eventually
from tests.e2e.monitoring.browser import DevToolsError, Page, chromium

ROOT = Path(__file__).resolve().parents[3]
PAYSTREAM = Path(sys.executable).parent / "paystream"
THREE_D_SECURE_CARD = "4000002500003155"
# Reads go to a replica; a write's token makes them wait for it (README: read your own write).
TOKEN = "PayStream-Consistency-Token"
UNKNOWN = "pay_" + "0" * 24
STEPS = ["committed", "in_kafka", "fraud_decided", "stripe_called", "stripe_answered",
         "status_written", "journal_posted", "merchant_notified"]

pytestmark = pytest.mark.skipif(not os.environ.get("API_URL"),
                                reason="needs the running stack: eval \"$(make -s env)\"")


def stack_dir() -> Path:
    return Path(os.environ.get("PAYSTREAM_STACK_DIR", ROOT / ".stack"))


def api_url() -> str:
    return os.environ["API_URL"].rstrip("/")


def paystream(*args: str) -> dict[str, Any]:
    done = subprocess.run([str(PAYSTREAM), *args], capture_output=True, text=True,
                          timeout=60, check=True)
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@dataclass
class Merchant:
    """A merchant of the test's own, paying through the stack's API as README shows."""

    http: aiohttp.ClientSession
    key: str
    # The token of the merchant's latest write, sent with every read.
    token: str | None = None

    async def card(self, number: str = "4242424242424242") -> str:
        """A payment method of its own: the fraud rules count payments per method."""
        form = {"type": "card", "card[number]": number, "card[exp_month]": "12",
                "card[exp_year]": "2030", "card[cvc]": "123"}
        async with self.http.post(
                f"{os.environ['STRIPE_API_BASE']}/v1/payment_methods", data=form,
                headers={"Authorization": f"Bearer {os.environ['STRIPE_API_KEY']}"}) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["id"])

    async def call(self, method: str, path: str,
                   body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if method == "POST":
            headers["Idempotency-Key"] = f"console-payment-{uuid.uuid4()}"
        elif self.token is not None:
            headers[TOKEN] = self.token
        async with self.http.request(method, api_url() + path, json=body,
                                     headers=headers) as resp:
            self.token = resp.headers.get(TOKEN, self.token)
            return resp.status, await resp.json()

    async def pay(self, *, amount: int = 2500, card: str = "4242424242424242") -> str:
        status, body = await self.call("POST", "/v1/payments", {
            "amount": amount, "currency": "usd", "payment_method": await self.card(card),
            "customer": f"console-{uuid.uuid4().hex[:12]}", "description": "console page"})
        assert status == 201, body
        return str(body["id"])

    async def status(self, payment_id: str) -> str:
        status, body = await self.call("GET", f"/v1/payments/{payment_id}")
        assert status == 200, body
        return str(body["status"])


@pytest.fixture(name="operator_key", scope="module")
def operator_key_fixture() -> Iterator[str]:
    """An operator of the test's own, made and revoked with README's commands."""
    operator = paystream("operator", "create", "--name",
                         f"console-payment-test-{uuid.uuid4().hex[:8]}")
    yield str(operator["operator_key"])
    subprocess.run([str(PAYSTREAM), "operator", "revoke", operator["id"]],
                   capture_output=True, timeout=60, check=True)


@pytest.fixture(name="merchant", scope="module")
async def merchant_fixture() -> AsyncIterator[Merchant]:
    """`paystream merchant create` with a webhook URL served here, which answers 200."""

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        made = paystream("merchant", "create", f"console payment {uuid.uuid4().hex[:6]}",
                         "--webhook-url", f"http://127.0.0.1:{port}/hook")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            yield Merchant(http, str(made["api_key"]))
    finally:
        await runner.cleanup()


async def operator_trace(merchant: Merchant, key: str, payment_id: str) -> dict[str, Any]:
    """The JSON route's answer, read after the merchant's latest write."""
    headers = {"Authorization": f"Bearer {key}",
               **({TOKEN: merchant.token} if merchant.token else {})}
    async with merchant.http.get(f"{api_url()}/console/api/payments/{payment_id}/trace",
                                 headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


async def when_ready(page: Page, what: str) -> Any:
    """Wait for the script to have drawn the payment (or said there is none)."""

    async def drawn() -> bool:
        try:
            return bool(await page.evaluate(
                "document.readyState === 'complete' && Boolean(window.paystreamPayment) "
                "&& window.paystreamPayment.status !== 'loading'"))
        except DevToolsError:
            return False  # asked while the page was being replaced

    await eventually(drawn, timeout=30, what=what)
    return await page.evaluate("window.paystreamPayment")


async def open_payment(page: Page, payment_id: str,
                       ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The payment's page once its trace is `ready`: the page reads a replica, which may
    not have replayed yet what the test saw."""

    async def shown() -> dict[str, Any] | None:
        await page.goto(f"{api_url()}/console/payments/{payment_id}")
        state = await when_ready(page, f"the page of {payment_id}")
        trace: dict[str, Any] | None = state["trace"]
        return trace if trace is not None and ready(trace) else None

    found: dict[str, Any] = await eventually(shown, timeout=60, interval=1,
                                             what=f"{payment_id} as expected on its page")
    # A replica behind the merchant's read answers 404 for a new payment meanwhile.
    page.errors[:] = [e for e in page.errors if not ("404" in e and payment_id in e)]
    return found


async def drawn_steps(page: Page) -> list[dict[str, Any]]:
    """The path's steps as the SVG draws them: name, kind, time and note."""
    steps: list[dict[str, Any]] = await page.evaluate("""
        [...document.querySelectorAll('#path-svg g.step')].map((g) => ({
            step: g.dataset.step, kind: g.dataset.kind,
            at: g.querySelector('text.at').textContent,
            note: g.querySelector('title').textContent}))""")
    return steps


async def text_of(page: Page, selector: str) -> str:
    text = await page.evaluate(f"document.querySelector({json.dumps(selector)}).textContent")
    return str(text)


@pytest.fixture(name="page", scope="module")
async def page_fixture(tmp_path_factory: pytest.TempPathFactory,
                       operator_key: str) -> AsyncIterator[Page]:
    """Chromium, logged in the way a person follows a link to a payment's page."""
    async with chromium(tmp_path_factory.mktemp("chromium"), height=1000) as page:
        await page.goto(f"{api_url()}/console/payments/{UNKNOWN}")
        # Without a session the page sends the browser to the login form, and back after.
        assert await page.evaluate(
            "[location.pathname, new URLSearchParams(location.search).get('next')]") == [
            "/console/login", f"/console/payments/{UNKNOWN}"]
        await page.evaluate(f"""(() => {{
            document.querySelector("input[name=key]").value = {json.dumps(operator_key)};
            document.querySelector("form").submit();
        }})()""")

        async def back_on_the_page() -> bool:
            try:
                return bool(await page.evaluate(
                    f"location.pathname === '/console/payments/{UNKNOWN}' "
                    "&& document.readyState === 'complete'"))
            except DevToolsError:
                return False

        await eventually(back_on_the_page, timeout=30, what="the payment page after logging in")
        yield page


async def test_an_unknown_payment_is_no_such_payment(page: Page) -> None:
    shown = await when_ready(page, "the page of an unknown payment")
    assert shown["status"] == "missing" and shown["trace"] is None
    assert "No such payment" in await text_of(page, "#missing")
    assert UNKNOWN in await text_of(page, "#missing")
    # The one error is the 404 the page asked for and explained.
    assert all("404" in error and UNKNOWN in error for error in page.errors), page.errors
    page.errors.clear()


async def test_the_json_route_is_for_operators_only(merchant: Merchant, operator_key: str) -> None:
    pid = await merchant.pay()
    url = f"{api_url()}/console/api/payments/{pid}/trace"
    demo = json.loads((stack_dir() / "demo-merchant.json").read_text())["api_key"]
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": f"Bearer {merchant.key}"},
                        {"Authorization": f"Bearer {demo}"},
                        {"Accept": "text/html"}):
            async with http.get(url, headers=headers, allow_redirects=False) as resp:
                body = await resp.json()
                assert resp.status == 401, (headers, body)
                assert body["error"]["code"] == "operator_required"
        assert (await operator_trace(merchant, operator_key, pid))["payment_id"] == pid
        async with http.get(url.replace(pid, UNKNOWN),
                            headers={"Authorization": f"Bearer {operator_key}"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "resource_missing"
        # The merchant's own route answers the same document for its own payment.
        status, own = await merchant.call("GET", f"/v1/payments/{pid}/trace")
        assert status == 200 and own["payment_id"] == pid and own["sources"]["postgres"] == "ok"


async def test_a_succeeded_payment_draws_every_step(page: Page, merchant: Merchant,
                                                    operator_key: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pid = await merchant.pay()

    async def settled() -> bool:
        trace = await operator_trace(merchant, operator_key, pid)
        return trace["status"] == "succeeded" and trace["waiting_for"] == []

    await eventually(settled, timeout=120, interval=0.5,
                     what=f"{pid} succeeded, journalled and its merchant told")

    # Found with the console's search box, as an operator finds it.
    await page.goto(f"{api_url()}/console/")
    await page.evaluate(f"""(() => {{
        const form = document.querySelector("form.search");
        form.querySelector("input[name=id]").value = {json.dumps(pid)};
        form.submit();
    }})()""")
    await when_ready(page, f"the page of {pid} from the search box")
    assert await page.evaluate("location.pathname") == f"/console/payments/{pid}"
    trace = await open_payment(
        page, pid, lambda t: t["status"] == "succeeded" and not t["waiting_for"])

    steps = await drawn_steps(page)
    assert [s["step"] for s in steps] == STEPS
    for step in steps:
        if step["step"] == "in_kafka":
            # The API reads Postgres only; `paystream trace` reads Kafka.
            assert step["kind"] == "absent" and step["note"].endswith("Kafka not read"), step
        else:
            assert step["kind"] == "reached" and step["at"] != "–", step
    gaps = await page.evaluate("document.querySelectorAll('#path-svg text.gap').length")
    assert gaps == len(STEPS) - 2
    assert "succeeded: done" in await text_of(page, "#where")
    assert "Waiting for nothing" in await text_of(page, "#waiting")
    assert f"jrn_payment_{pid}" in await text_of(page, "#journals")
    assert "payment.succeeded" in await text_of(page, "#notifications")
    assert "delivered" in await text_of(page, "#notifications")
    timeline_rows = await page.evaluate("document.querySelectorAll('#timeline tbody tr').length")
    assert timeline_rows == len(trace["timeline"]) >= 5
    assert page.errors == []

    path = await page.screenshot(stack_dir() / "artifacts" / "console-payment.png")
    assert path.stat().st_size > 10_000
    with capsys.disabled():
        print(f"\n  payment page screenshot: {path}")


async def test_a_blocked_payment_shows_its_fraud_reasons(page: Page, merchant: Merchant) -> None:
    # Over the single-payment limit for usd (paystream/domain/fraud.py: 1,000,000).
    pid = await merchant.pay(amount=1_000_001)
    await eventually(lambda: _is(merchant, pid, "blocked"), timeout=120, interval=0.5,
                     what=f"{pid} blocked")

    trace = await open_payment(page, pid, lambda t: t["status"] == "blocked")

    assert "amount_limit" in trace["facts"]["fraud_decision"]["rules_hit"]
    fraud = await text_of(page, "#fraud")
    assert "blocked" in fraud
    assert "amount_limit" in fraud and "over the single-payment limit" in fraud
    steps = {s["step"]: s for s in await drawn_steps(page)}
    assert steps["fraud_decided"]["kind"] == "blocked"
    assert "blocked: " in steps["fraud_decided"]["note"]
    assert steps["stripe_called"]["kind"] == "absent"
    assert "Never sent to Stripe" in await text_of(page, "#submissions")
    assert await text_of(page, "#status") == "blocked"
    assert page.errors == []


async def test_a_payment_in_3d_secure_shows_what_it_waits_for(page: Page,
                                                              merchant: Merchant) -> None:
    # Honestly unsettled on a healthy stack: Stripe waits for the customer.
    pid = await merchant.pay(card=THREE_D_SECURE_CARD)
    await eventually(lambda: _is(merchant, pid, "requires_action"), timeout=120, interval=0.5,
                     what=f"{pid} requires_action")

    trace = await open_payment(page, pid, lambda t: t["status"] == "requires_action")

    assert not trace["terminal"]
    assert await text_of(page, "#status") == "requires_action"
    waiting = await text_of(page, "#waiting")
    assert "Waiting for" in waiting
    assert "the customer to complete 3-D Secure at Stripe" in waiting
    assert "requires_action: waiting for" in await text_of(page, "#where")
    steps = {s["step"]: s for s in await drawn_steps(page)}
    assert steps["status_written"]["kind"] == "reached"
    assert steps["journal_posted"]["kind"] == "absent"
    assert steps["merchant_notified"]["note"].endswith("not applicable until terminal")
    # The page keeps reading while the payment is unsettled.
    assert "every 5 s" in await text_of(page, "#updated")
    assert page.errors == []


async def test_a_refunded_payment_shows_its_refund(page: Page, merchant: Merchant,
                                                   operator_key: str) -> None:
    pid = await merchant.pay(amount=2000)
    await eventually(lambda: _is(merchant, pid, "succeeded"), timeout=120, interval=0.5,
                     what=f"{pid} succeeded")
    status, refund = await merchant.call("POST", "/v1/refunds", {"payment": pid, "amount": 500})
    assert status == 201, refund

    async def refunded() -> bool:
        trace = await operator_trace(merchant, operator_key, pid)
        refunds = trace["facts"]["refunds"]
        return (bool(refunds) and refunds[0]["status"] == "succeeded"
                and trace["waiting_for"] == [])

    await eventually(refunded, timeout=120, interval=0.5, what=f"refund {refund['id']} settled")

    trace = await open_payment(page, pid,
                               lambda t: bool(t["facts"]["refunds"]) and not t["waiting_for"])

    assert [r["id"] for r in trace["facts"]["refunds"]] == [refund["id"]]
    refunds = await text_of(page, "#refunds")
    assert refund["id"] in refunds and "500 usd" in refunds and "succeeded" in refunds
    assert f"jrn_refund_{refund['id']}" in await text_of(page, "#journals")
    assert "500 usd" in await text_of(page, "#row")  # amount_refunded
    assert f"refund {refund['id']} created" in await text_of(page, "#timeline")
    assert page.errors == []


async def _is(merchant: Merchant, payment_id: str, status: str) -> bool:
    return await merchant.status(payment_id) == status
