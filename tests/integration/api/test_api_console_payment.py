"""The console's payment page: an operator reads any merchant's payment's trace, the same
document the merchant route answers; merchants and strangers get 401; the search box's
form lands on the payment's page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from api.operators import INSERT_OPERATOR, NewOperator
from paystream.settings import Settings
from testkit.rows import create_merchant
from tests.integration.api.api_helpers import TOKEN, Api, start_api

# The module's own database: no worker moves these payments on.
pytestmark = pytest.mark.own_database

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
UNKNOWN = "pay_" + "0" * 24


@pytest.fixture(name="api", scope="module")
async def console_api_fixture(settings: Settings) -> AsyncIterator[Api]:
    """The API on the module's own database: no worker moves these payments on."""
    client, app = await start_api(settings)
    try:
        yield Api(client, app, settings)
    finally:
        await client.close()


@pytest.fixture(name="operator", scope="module")
async def operator_fixture(db: psycopg.AsyncConnection) -> NewOperator:
    operator = NewOperator(name="console-payment-test")
    await db.execute(INSERT_OPERATOR, operator.row())
    return operator


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


async def test_an_operator_reads_any_merchants_payment_as_its_merchant_does(
    api: Api, db: psycopg.AsyncConnection, operator: NewOperator
) -> None:
    owner = await create_merchant(db, "Owner")
    other = await create_merchant(db, "Other")
    status, created, headers = await api.create_payment(owner.api_key)
    assert status == 201
    pid, token = created["id"], headers[TOKEN]

    resp = await api.client.get(f"/console/api/payments/{pid}/trace",
                                headers=bearer(operator.key, **{TOKEN: token}))
    as_operator = await resp.json()
    assert resp.status == 200, as_operator
    resp = await api.client.get(f"/v1/payments/{pid}/trace",
                                headers=bearer(owner.api_key, **{TOKEN: token}))
    as_owner = await resp.json()
    assert resp.status == 200, as_owner
    assert as_operator == as_owner
    assert as_operator["facts"]["payment"]["merchant_id"] == owner.id

    # Merchant keys never open the console, the payment's own merchant's included.
    for key in (owner.api_key, other.api_key):
        resp = await api.client.get(f"/console/api/payments/{pid}/trace", headers=bearer(key))
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "operator_required"
    resp = await api.client.get(f"/console/api/payments/{pid}/trace")
    assert resp.status == 401
    # ...and the merchant route still hides one merchant's payment from another.
    resp = await api.client.get(f"/v1/payments/{pid}/trace", headers=bearer(other.api_key))
    assert resp.status == 404


@pytest.mark.parametrize("pid", [UNKNOWN, "nope", "pay_%20"])
async def test_an_unknown_payment_is_a_404(api: Api, operator: NewOperator, pid: str) -> None:
    resp = await api.client.get(f"/console/api/payments/{pid}/trace",
                                headers=bearer(operator.key))
    body = await resp.json()
    assert resp.status == 404, body
    assert body["error"]["code"] == "resource_missing" and body["error"]["param"] == "id"


async def test_the_page_is_served_to_operators_and_sends_others_to_log_in(
    api: Api, operator: NewOperator
) -> None:
    resp = await api.client.get(f"/console/payments/{UNKNOWN}", headers=bearer(operator.key))
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "../payment.js" in await resp.text()
    script = await api.client.get("/console/payment.js", headers=bearer(operator.key))
    assert script.status == 200 and script.content_type == "text/javascript"
    resp = await api.client.get(f"/console/payments/{UNKNOWN}", headers=HTML,
                                allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == f"/console/login?next=/console/payments/{UNKNOWN}"


@pytest.mark.parametrize(("query", "location"), [
    ({"id": UNKNOWN}, f"/console/payments/{UNKNOWN}"),
    ({"id": f"  {UNKNOWN} "}, f"/console/payments/{UNKNOWN}"),
    # Not an id, but the page is where the operator learns there is no such payment.
    ({"id": "a/b?c"}, "/console/payments/a%2Fb%3Fc"),
    ({"id": ""}, "/console/"),
    ({}, "/console/"),
])
async def test_the_search_box_lands_on_the_payments_page(
    api: Api, operator: NewOperator, query: dict[str, str], location: str
) -> None:
    resp = await api.client.get("/console/payments", params=query,
                                headers=bearer(operator.key), allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == location
