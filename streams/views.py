"""The worker's web views (JSON): health, readiness, metrics, pending, balances, velocity, stats."""

from __future__ import annotations

import time
from typing import Any, cast

from faust.tables.manager import TableManager
from faust.web import Request, Response, View

from streams import metrics
from streams.adapters.tables import balance_amount
from streams.worker_parts import WorkerParts

PAGE_DEFAULT = 50
PAGE_MAX = 500


class Views:
    """The worker's pages, installed on its app.

    Faust makes a View of each page class and calls its methods with the view as
    self, so each page is a class defined here, over the worker's parts it reads.
    """

    def __init__(self, w: WorkerParts) -> None:
        self._w = w
        self._probes()
        self._pending_pages()
        self._table_pages()
        self._stats_page()

    def _assigned(self) -> list[str]:
        app, settings = self._w.app, self._w.settings
        try:
            tps = app.consumer.assignment()
        except Exception:  # no consumer yet: nothing assigned
            return []
        return sorted(f"{tp.topic}:{tp.partition}" for tp in tps
                      if tp.topic in (settings.payments_topic, settings.refunds_topic))

    def _probes(self) -> None:
        app, settings, runtime = self._w.app, self._w.settings, self._w.runtime
        watch = self._w.watch
        assigned = self._assigned

        @app.page("/health/")
        class Health(View):
            """Up and doing its job: in its consumer group, advancing wherever messages wait
            (the stack's probe: `make status` shows a stalled worker as down)."""

            async def get(self, request: Request) -> Response:
                health = watch.health()
                return self.json({"status": "ok" if health.ok else "unhealthy",
                                  "app": settings.faust_app_id, **health.as_json()},
                                 status=200 if health.ok else 503)

        @app.page("/live/")
        class Live(View):
            """The event loop is turning (this answer needed it)."""

            async def get(self, request: Request) -> Response:
                return self.json({"status": "ok"})

        @app.page("/ready/")
        class Ready(View):
            """Partitions assigned, tables recovered, not rebalancing, Postgres reachable."""

            async def get(self, request: Request) -> Response:
                health = watch.health()
                checks: dict[str, bool] = {
                    "assigned": bool(assigned()),
                    "advancing": not health.stalled,
                    # Typed as TableManagerT, which lacks recovery; the app's manager has it.
                    "recovered": cast(TableManager, app.tables).recovery.completed.is_set(),
                    "not_rebalancing": not app.rebalancing,
                }
                try:
                    pool = await runtime.pool()
                    async with pool.connection(timeout=2) as conn:
                        await conn.execute("SELECT 1")
                    checks["database"] = True
                except Exception:  # any failure means not ready
                    checks["database"] = False
                ready = all(checks.values())
                return self.json({"status": "ready" if ready else "not_ready",
                                  "checks": checks},
                                 status=200 if ready else 503)

        app.page("/metrics")(type("Metrics", (_Metrics,), {}))
        app.page("/metrics/")(type("MetricsSlash", (_Metrics,), {}))

    def _pending_pages(self) -> None:
        app, tables = self._w.app, self._w.tables
        assigned = self._assigned

        @app.page("/pending/")
        class PendingList(View):
            """This worker's pending entries: count, oldest age, due now, and a page of
            entries."""

            async def get(self, request: Request) -> Response:
                try:
                    limit = min(PAGE_MAX, max(1, int(request.query.get("limit", PAGE_DEFAULT))))
                except ValueError:
                    limit = PAGE_DEFAULT
                now = time.time()
                entries = sorted(tables.local_pending_entries(), key=lambda e: e["next_poll_at"])
                oldest = min((e["since"] for e in entries), default=None)
                return self.json({
                    "scope": "this worker's partitions",
                    "worker": str(app.conf.canonical_url),
                    "partitions": assigned(),
                    "count": len(entries),
                    "due": sum(1 for e in entries if e["next_poll_at"] <= now),
                    "oldest_age_seconds": None if oldest is None else round(now - oldest, 3),
                    "entries": [_entry(e, now) for e in entries[:limit]],
                })

        @app.page("/pending/{object_id}/")
        class PendingDetail(View):
            """One entry, answered by the worker that owns the id (table_route forwards)."""

            # Faust types a routed handler as (View, Request[, *args]): a View subclass's
            # method taking its match_info by name does not fit, though Faust calls it so.
            @app.table_route(table=tables.pending, match_info="object_id")  # type: ignore[arg-type]
            async def get(self, request: Request, object_id: str) -> Response:
                entry = tables.pending.get(object_id)
                if entry is None:
                    return self.json({"error": {"type": "invalid_request_error",
                                                "code": "resource_missing",
                                                "message": f"{object_id} is not pending here",
                                                "param": "id"}}, status=404)
                return self.json(_entry(entry, time.time()))

    def _table_pages(self) -> None:
        app, settings, tables = self._w.app, self._w.settings, self._w.tables

        @app.page("/balances/{account}/")
        class Balance(View):
            """A ledger account's balance (minor units; debit +, credit -), from the balances
            table."""

            @app.table_route(table=tables.balances, match_info="account")  # type: ignore[arg-type]
            async def get(self, request: Request, account: str) -> Response:
                balance = balance_amount(tables.balances[account])
                return self.json({"account": account, "balance": balance,
                                  "currency": account.rsplit(":", 1)[-1]})

        @app.page("/fraud/velocity/{customer}/")
        class Velocity(View):
            """A customer's payments in the current sliding window, per currency."""

            @app.table_route(table=tables.customer_velocity.table,  # type: ignore[arg-type]
                             match_info="customer")
            async def get(self, request: Request, customer: str) -> Response:
                count, amounts = tables.velocity(tables.customer_velocity, customer,
                                                 int(time.time() * 1000))
                return self.json({
                    "customer": customer,
                    "window_seconds": settings.fraud.velocity_window_seconds,
                    "count": count,
                    "amount": amounts,
                })

    def _stats_page(self) -> None:
        app, runtime = self._w.app, self._w.runtime
        assigned = self._assigned

        @app.page("/stats/")
        class Stats(View):
            """Events per agent, errors, dead letters, Stripe calls and circuit, CDC lag."""

            async def get(self, request: Request) -> Response:
                snap = metrics.snapshot()
                stripe = runtime.stripe
                breaker = stripe.breaker
                return self.json({
                    "worker": str(app.conf.canonical_url),
                    "partitions": assigned(),
                    "events_processed": snap.get("paystream_stream_events", {}),
                    "errors": snap.get("paystream_stream_errors", {}),
                    "dead_letters": snap.get("paystream_dead_letters", {}),
                    "stripe_calls": snap.get("paystream_stripe_calls", {}),
                    "circuit": {"state": breaker.state.value, "retry_in_seconds":
                                round(breaker.retry_in(), 3),
                                "times_opened": breaker.opened_count},
                    "stripe_budget": {"requests_per_second": stripe.budget.rate,
                                      "waiting": stripe.budget.waiting,
                                      "in_flight": stripe.in_flight,
                                      "rate_limit_pauses": stripe.budget.pauses},
                    "cdc_lag_seconds": snap.get("paystream_cdc_lag_seconds", {}),
                    "transitions": snap.get("paystream_transitions", {}),
                    "fraud_decisions": snap.get("paystream_fraud_decisions", {}),
                    "journals_posted": snap.get("paystream_ledger_journals", {}),
                    "merchant_webhooks": snap.get("paystream_merchant_webhooks", {}),
                    "polls": snap.get("paystream_poller_polls", {}),
                    "pending_local": snap.get("paystream_pending_entries", {}).get("value", 0),
                })


class _Metrics(View):
    async def get(self, request: Request) -> Response:
        # aiohttp refuses a charset inside content_type; the exposition is ASCII.
        return self.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")


def _entry(entry: dict[str, Any], now: float) -> dict[str, Any]:
    return {**entry, "age_seconds": round(now - entry["since"], 3),
            "due_in_seconds": round(entry["next_poll_at"] - now, 3)}
