"""The console's payment page: a search by id, the page of one payment, and its trace as JSON.

The trace is the merchant route's document (api/trace.py) for any merchant's
payment: an operator sees them all. Who may ask is decided before any handler
here runs (api/console_auth.py).
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from api.console import page_file
from api.errors import NotFound, json_response
from api.payments import payment_id
from api.trace import trace_document

PAGES = "/console/payments/"


async def search(request: web.Request) -> web.StreamResponse:
    """GET /console/payments?id=...: the search box's form, sent on to the payment's page."""
    wanted = request.query.get("id", "").strip()
    if not wanted:
        raise web.HTTPFound("/console/")
    # Even an id that cannot be a payment gets its page: the page says there is none.
    raise web.HTTPFound(PAGES + quote(wanted, safe=""))


async def page(request: web.Request) -> web.FileResponse:
    """GET /console/payments/{id}: the page; its script reads the id from the URL."""
    return page_file("payment.html")


async def trace(request: web.Request) -> web.Response:
    """GET /console/api/payments/{id}/trace: GET /v1/payments/{id}/trace without the
    merchant check."""
    pid = payment_id(request)
    document = await trace_document(request, pid, merchant_id=None)
    if document is None:
        raise NotFound(f"No such payment: '{pid}'", param="id")
    return json_response(document)
