"""Reads through the replicas, with read-your-writes for clients holding a consistency token.

A write answers ``PayStream-Consistency-Token: <LSN>`` (read on the primary
after its commit). A read that sends it back runs on a replica only once that
replica has replayed up to the LSN, checked on the very connection the query
then uses (NGINX pins a connection to one replica); after
``read_your_writes_wait_ms`` it reads the primary instead. A replica that is
down or cancels the query (recovery conflict) also falls back to the primary.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import psycopg.errors
from aiohttp import web
from psycopg_pool import PoolTimeout

from api.errors import InvalidRequest
from api.idempotency import TOKEN_HEADER
from api.state import METRICS, PRIMARY, REPLICA, SETTINGS

T = TypeVar("T")
Work = Callable[[psycopg.AsyncConnection], Awaitable[T]]

# pg_lsn's text form: two hex numbers of up to 32 bits each.
_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")
# Do not wait long for a replica connection: the primary can answer instead.
REPLICA_CONNECT_TIMEOUT = 1.0
_POLL_FIRST, _POLL_MAX = 0.001, 0.02

# NULL replay LSN means the server is not a standby, i.e. it is the primary itself.
_CAUGHT_UP = "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, NOT pg_is_in_recovery())"

# Errors after which the same read on the primary will do.
_REPLICA_ERRORS = (psycopg.OperationalError, psycopg.errors.SerializationFailure, PoolTimeout)


def consistency_token(request: web.Request) -> str | None:
    """The request's consistency token, validated, or None."""
    raw = request.headers.get(TOKEN_HEADER)
    if raw is None:
        return None
    if not _LSN.fullmatch(raw.strip()):
        raise InvalidRequest(
            f"{TOKEN_HEADER} must be an LSN as returned by a write, e.g. 0/16B3748; "
            f"got {raw[:40]!r}.",
            param=TOKEN_HEADER,
            code="invalid_consistency_token",
        )
    return raw.strip()


async def _caught_up(conn: psycopg.AsyncConnection, token: str, wait_seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    delay = _POLL_FIRST
    while True:
        cur = await conn.execute(_CAUGHT_UP, (token,))
        row = await cur.fetchone()
        if row is not None and row[0]:
            return True
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, _POLL_MAX)


async def read(request: web.Request, work: Work[T]) -> T:
    """Run a read-only ``work(conn)`` on a replica that is recent enough, else the primary.

    ``work`` may run twice (replica failed midway, then primary), so it must not write.
    """
    app = request.app
    token = consistency_token(request)
    metrics = app[METRICS]
    try:
        async with app[REPLICA].connection(timeout=REPLICA_CONNECT_TIMEOUT) as conn:
            wait = app[SETTINGS].read_your_writes_wait_ms / 1000
            if token is None or await _caught_up(conn, token, wait):
                return await work(conn)
        metrics.replica_fallbacks.labels("lagging").inc()
    except _REPLICA_ERRORS:
        metrics.replica_fallbacks.labels("unavailable").inc()
    async with app[PRIMARY].connection() as conn:
        return await work(conn)
