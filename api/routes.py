"""Every route of the API, in one place."""

from __future__ import annotations

from aiohttp import web

from api import (
    balances,
    console,
    console_auth,
    console_payments,
    health,
    payments,
    refunds,
    trace,
    webhooks,
)


def setup_routes(app: web.Application) -> None:
    add = app.router
    add.add_get("/health", health.health)
    add.add_get("/live", health.live)
    add.add_get("/ready", health.ready)
    add.add_get("/metrics", health.metrics)
    add.add_get("/openapi.json", health.openapi)

    add.add_post("/v1/payments", payments.create)
    add.add_get("/v1/payments", payments.list_)
    add.add_get("/v1/payments/{id}", payments.retrieve)
    add.add_post("/v1/payments/{id}/cancel", payments.cancel)
    add.add_get("/v1/payments/{id}/trace", trace.retrieve)
    add.add_post("/v1/refunds", refunds.create)
    add.add_get("/v1/balances", balances.retrieve)
    add.add_post("/v1/webhooks/stripe", webhooks.stripe_webhook)

    # The operator console: a page, its files, and Prometheus' read-only query API,
    # all behind an operator login (api/console_auth.py guards every /console path).
    add.add_get("/console/login", console_auth.login_form)
    add.add_post("/console/login", console_auth.login)
    add.add_post("/console/logout", console_auth.logout)
    add.add_get("/console", console.redirect)
    add.add_get("/console/", console.page)
    add.add_get("/console/api/v1/{endpoint}", console.prometheus)
    # One payment's trace, any merchant's (api/console_payments.py).
    add.add_get("/console/payments", console_payments.search)
    add.add_get("/console/payments/{id}", console_payments.page)
    add.add_get("/console/api/payments/{id}/trace", console_payments.trace)
    add.add_get("/console/{name}", console.asset)
