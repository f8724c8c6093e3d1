"""Connection pools for the primary and the replicas (through NGINX), and the commit LSN."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import psycopg
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from api.state import PRIMARY, REPLICA, SETTINGS

log = logging.getLogger(__name__)

# One asyncio process is CPU-bound long before ten connections are busy
# (FACTS: ~7k inserts/s with a pool of 10); more would only queue in Postgres.
POOL_MAX_SIZE = 10
POOL_MIN_SIZE = 2
# How long a request waits for a connection before it answers 503: short, so
# a primary outage turns into fast, retryable errors rather than hung clients.
POOL_TIMEOUT_SECONDS = 3.0
STATEMENT_TIMEOUT_MS = 5000


async def _configure(conn: psycopg.AsyncConnection) -> None:
    # Autocommit first: a SET before it leaves a transaction open and the pool
    # could not initialise (FACTS). Every write opens its own explicit transaction.
    await conn.set_autocommit(True)
    await conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")


def make_pool(conninfo: str, name: str) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        conninfo,
        min_size=POOL_MIN_SIZE,
        max_size=POOL_MAX_SIZE,
        open=False,
        configure=_configure,
        timeout=POOL_TIMEOUT_SECONDS,
        name=name,
    )


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open both pools without waiting (the API starts even if Postgres
    is still down and answers 503 until it is up), close them on shutdown."""
    settings = app[SETTINGS]
    primary = make_pool(settings.database_url, "primary")
    replica = make_pool(settings.database_read_url, "replica")
    await primary.open(wait=False)
    await replica.open(wait=False)
    app[PRIMARY] = primary
    app[REPLICA] = replica
    try:
        yield
    finally:
        await replica.close()
        await primary.close()


async def current_lsn(conn: psycopg.AsyncConnection) -> str:
    """The primary's WAL write position, read after a commit: the consistency token.

    Any replica whose replay LSN has reached it has replayed that commit too.
    """
    cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])
