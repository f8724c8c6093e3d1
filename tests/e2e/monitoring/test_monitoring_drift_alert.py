"""ReconcileDrift fires in the stack's Prometheus for a PaymentIntent made behind our back,
and clears after `paystream reconcile --fix`.

The stack's worker reconciles every 10 minutes, too slowly for a test, so the test
runs the worker's own reconciliation (streams.reconcile.Incremental, what the
leader's timer runs) in-process every few seconds over its merchant alone, serves
its metrics on a port of its own and adds that port to Prometheus' file-discovered
targets (removed at the end). Only the worker that reconciled last counts in the
rule, so while the test runs its series are the ones the alert reads; it looks only
at alert instances of its own port.

The drift is planted in books of the test's own (testkit/own_books.py: a localstripe
and a database of its own, both gone at the end): a PaymentIntent cannot be
deleted from a localstripe, so one made at the stack's would stay in its books for
ever. The alert reads only the reconciliation's metrics, wherever its books are.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from paystream.domain import new_id
from paystream.domain.ledger import journal_for_payment
from paystream.settings import Settings
from streams import metrics, reconcile
from streams.adapters import postgres
from streams.adapters.stripe_gateway import StripeGateway
from streams.resilience import RequestBudget
from testkit.own_books import OwnBooks, own_books
from testkit.ports import free_port
from testkit.rows import create_merchant, merchant_id
from testkit.waiting import eventually
from tests.e2e.monitoring.prom import alerts, api

ROOT = Path(__file__).resolve().parents[3]
TARGETS = Path(os.environ.get("PROMETHEUS_TARGETS_DIR",
                              ROOT / ".stack" / "prometheus" / "targets"))
ALERT = "ReconcileDrift"
KIND = "charged_not_succeeded"
# Prometheus re-reads its target files every 30 s, then scrapes and evaluates every 5 s.
FIRE_WITHIN = 75.0
CLEAR_WITHIN = 30.0


async def rule_loaded() -> bool:
    groups = (await api("rules"))["groups"]
    return any(r.get("name") == ALERT for g in groups for r in g["rules"])


@contextlib.asynccontextmanager
async def scraped_metrics() -> AsyncIterator[str]:
    """The worker's metrics registry on a port of its own, known to Prometheus."""
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY),
                            content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    instance = f"127.0.0.1:{port}"
    target = TARGETS / f"e2e-reconcile-{port}.json"
    target.write_text(json.dumps([{"targets": [instance],
                                   "labels": {"job": "e2e-reconcile"}}]))
    try:
        yield instance
    finally:
        target.unlink(missing_ok=True)
        await runner.cleanup()


async def charged_behind_our_back(settings: Settings, payment_id: str, merchant: str) -> str:
    """A confirmed PaymentIntent made directly at the test's localstripe naming our payment.
    That localstripe has no webhook: no API hears of it."""
    async with aiohttp.ClientSession() as http, http.post(
            f"{settings.stripe_api_base}/v1/payment_intents",
            headers={"Authorization": f"Bearer {settings.stripe_api_key}"},
            data={"amount": "1000", "currency": "usd", "payment_method": "pm_card_visa",
                  "confirm": "true", "metadata[payment_id]": payment_id,
                  "metadata[merchant_id]": merchant}) as resp:
        pi = await resp.json()
    assert pi["status"] == "succeeded", pi
    return str(pi["id"])


def fix(own: OwnBooks, merchant: str) -> dict[str, object]:
    """`paystream reconcile --fix` over the test's own books (its environment names them)."""
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "paystream"), "reconcile",
                           "--merchant", merchant, "--settle", "0", "--fix", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                          env=own.env)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def test_a_planted_drift_fires_the_alert_and_clears_after_fix(settings: Settings) -> None:
    if not await rule_loaded():
        pytest.skip(f"the stack's Prometheus runs rules without {ALERT}: `make up` reloads them")
    assert TARGETS.is_dir(), f"{TARGETS}: Prometheus' file-discovered targets"
    merchant = merchant_id("acct_drift")
    payment_id = new_id("pay")
    async with own_books(settings) as own:
        conn, settings = own.conn, own.settings
        await create_merchant(conn, "drift e2e", merchant_id=merchant)
        # `processing`, as a payment the worker submitted and waits to hear of.
        await conn.execute(
            "INSERT INTO payments (id, merchant_id, amount, currency, status, customer, "
            "payment_method, idempotency_key) VALUES (%s, %s, 1000, 'usd', 'processing', "
            "'c_drift', 'pm_card_visa', %s)", (payment_id, merchant, new_id("idem")))
        pi_id = await charged_behind_our_back(settings, payment_id, merchant)

        gateway = StripeGateway(settings, budget=RequestBudget(5))
        lister = reconcile.StripeLister(gateway, background=True)
        # The worker's reconciliation of this merchant, over an hour, settled at once.
        worker = reconcile.Incremental(window_seconds=3600, interval_seconds=3600,
                                       merchant=merchant, settle_seconds=0,
                                       rolling_share=1.0)

        async def reconciled() -> None:
            worker.schedule = reconcile.Schedule()  # the whole hour each time
            await worker.run_once(conn, lister)

        async def instances(instance: str) -> list[dict[str, object]]:
            await reconciled()
            return [a for a in await alerts(ALERT)
                    if a["labels"].get("instance") == instance
                    and a["labels"].get("kind") == KIND]

        try:
            async with scraped_metrics() as instance:
                started = time.monotonic()

                async def firing() -> bool:
                    return any(a["state"] == "firing" for a in await instances(instance))

                await eventually(firing, timeout=FIRE_WITHIN, interval=2,
                                 what=f"{ALERT} firing for {KIND}")
                fired_after = time.monotonic() - started

                report = fix(own, merchant)
                assert report["fixed"] == 1, report
                # What the ledger agent posts for the move (the worker would, from its
                # change; the same journal id, so posting twice is a no-op).
                await postgres.post_journals(conn, [journal_for_payment(
                    payment_id, merchant, 1000, "usd")])
                fixed = time.monotonic()

                async def cleared() -> bool:
                    return not await instances(instance)

                await eventually(cleared, timeout=CLEAR_WITHIN, interval=2,
                                 what=f"{ALERT} cleared")
                cleared_after = time.monotonic() - fixed
        finally:
            await gateway.close()
    print(f"{ALERT}: fired {fired_after:.0f}s after the PaymentIntent {pi_id} was listed, "
          f"cleared {cleared_after:.0f}s after --fix")
