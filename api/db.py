"""Connection pools for the primary and the replicas (through NGINX), and the commit LSN."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import psycopg
from aiohttp import web
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.state import PRIMARY, REPLICA, SETTINGS

log = logging.getLogger(__name__)

# One asyncio process is CPU-bound long before ten connections are busy
# (measured: ~7k inserts/s with a pool of 10); more would only queue in Postgres.
POOL_MAX_SIZE = 10
POOL_MIN_SIZE = 2
# How long a request waits for a connection before it answers 503: short, so
# a primary outage turns into fast, retryable errors rather than hung clients.
POOL_TIMEOUT_SECONDS = 3.0
STATEMENT_TIMEOUT_MS = 5000


async def _configure(conn: psycopg.AsyncConnection) -> None:
    # Autocommit first: a SET before it leaves a transaction open and the pool
    # could not initialise (PoolTimeout). Every write opens its own explicit transaction.
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


async def write_returning(
    conn: psycopg.AsyncConnection, statement: str, params: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, str]:
    """Run one statement in its own transaction; its first row and the consistency token.

    One round trip instead of two: the statement, its COMMIT and the LSN read
    after it travel as one multi-statement query (client-side binding; the
    server runs them in order, and the SELECT after COMMIT sees a position past
    the commit record). The API is CPU-bound on its round trips.
    """
    cur = psycopg.AsyncClientCursor(conn, row_factory=dict_row)
    try:
        await cur.execute(
            f"BEGIN; {statement}; COMMIT; SELECT pg_current_wal_lsn()::text AS lsn", params
        )
    except psycopg.Error:
        # A failed statement leaves the explicit transaction aborted: end it so
        # the pool gets the connection back idle.
        if conn.info.transaction_status == TransactionStatus.INERROR:
            await conn.rollback()
        raise
    cur.nextset()  # past BEGIN: the statement's own result
    row = await cur.fetchone()
    cur.nextset()  # COMMIT
    cur.nextset()  # the LSN
    lsn = await cur.fetchone()
    assert lsn is not None
    return row, str(lsn["lsn"])
