"""The integration tier's fixtures: the API in-process on the real stack, a connection to the
primary, a merchant per test, and for modules marked `own_database` a database of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from api.merchants import NewMerchant
from paystream.settings import Settings
from testkit import connector
from testkit.own_books import own_database
from testkit.rows import create_merchant
from tests.integration.api.api_helpers import Api, start_api


@pytest.fixture(name="settings", scope="module")
async def module_settings(request: pytest.FixtureRequest,
                          settings: Settings) -> AsyncIterator[Settings]:
    """The stack's settings; in a module marked `own_database`, on a database of the module's
    own (testkit/own_books.py's). Such modules play Stripe: a payment they mark succeeded
    through a signed webhook names a PaymentIntent the stack's Stripe never made, which
    `paystream reconcile` would report in the stack's books for ever. Replicas and NGINX
    serve it too (they copy every database). Dropped with the module."""
    if request.node.get_closest_marker("own_database") is None:
        yield settings
        return
    async with own_database(settings) as own:
        yield own


@pytest.fixture(name="api", scope="module")
async def api_fixture(settings: Settings) -> AsyncIterator[Api]:
    """The API on the module's settings, shared by its tests, with the stack's Debezium
    connector paused meanwhile.

    These tests play Stripe (signed webhooks) on payments they have just created.
    The stack's worker would race them: fraud-block the payment (every test payment
    uses pm_card_visa, over the per-method velocity limit) or submit it to
    localstripe first, and the webhook would find it already moved on. The changes
    wait in the replication slot and stream once resumed. Without CONNECT_URL (no
    stack environment) nothing is paused.
    """
    client, app = await start_api(settings)
    try:
        async with connector.paused_async(connector.connect_url()):
            yield Api(client, app, settings)
    finally:
        await client.close()


@pytest.fixture(name="client", scope="module")
async def client_fixture(settings: Settings) -> AsyncIterator[TestClient]:
    """A client of the API on the module's settings, the connector left streaming."""
    client, _ = await start_api(settings)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(name="db", scope="module")
async def db_fixture(settings: Settings) -> AsyncIterator[psycopg.AsyncConnection]:
    """An autocommit connection to the primary, to look at what the API wrote."""
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(name="merchant")
async def merchant_fixture(db: psycopg.AsyncConnection) -> NewMerchant:
    """A merchant of the test's own, made as `paystream merchant create` makes one."""
    return await create_merchant(db, "Test Shop")
