"""The e2e tier's fixtures: a webhook receiver, rows as the API writes them, and books (a
Stripe and a database) of a test's own. The stream tests' pipeline is in streams/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from paystream.settings import Settings
from testkit.own_books import OwnBooks, own_books
from testkit.webhooks import WebhookReceiver
from tests.e2e.streams.streams_harness import (
    Db,
)


@pytest.fixture(scope="session", name="receiver")
async def receiver_fixture() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture(name="db")
async def db_fixture(settings: Settings) -> AsyncIterator[Db]:
    async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                     autocommit=True) as conn:
        yield Db(conn)


@pytest.fixture(name="own")
async def own_fixture(settings: Settings) -> AsyncIterator[OwnBooks]:
    """A Stripe and a database of the test's own, where it plants its drift."""
    async with own_books(settings) as own:
        yield own
