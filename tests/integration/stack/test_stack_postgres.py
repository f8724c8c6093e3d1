"""PostgreSQL streaming replication and the NGINX read balancer, on the real stack."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from testkit.stack import run_stack
from testkit.waiting import eventually


def replica_urls() -> list[str]:
    return [os.environ["DATABASE_REPLICA1_URL"], os.environ["DATABASE_REPLICA2_URL"]]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def fetch_row(url: str, sql: str, params: tuple[object, ...] = ()) -> tuple | None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True,
                                                     connect_timeout=5) as conn:
        return await (await conn.execute(sql, params)).fetchone()


async def landed_on(read_url: str) -> int:
    """Opens one connection through NGINX; returns the port of the server it reached."""
    row = await fetch_row(read_url, "SELECT inet_server_port(), pg_is_in_recovery()")
    assert row is not None and row[1] is True, "a read connection reached the primary"
    return row[0]


async def test_both_replicas_stream_from_the_primary() -> None:
    async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_ADMIN_URL"]) as conn:
        rows = await (await conn.execute(
            "SELECT application_name, state FROM pg_stat_replication "
            "WHERE application_name LIKE 'postgres_replica%' ORDER BY 1")).fetchall()
    assert rows == [("postgres_replica1", "streaming"), ("postgres_replica2", "streaming")]


async def test_a_committed_row_reaches_both_replicas(settings) -> None:
    marker = uuid.uuid4().hex
    async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                     autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS replication_probe "
                           "(marker text PRIMARY KEY, at timestamptz DEFAULT now())")
        await conn.execute("INSERT INTO replication_probe (marker) VALUES (%s)", (marker,))
    for url in replica_urls():
        async def replicated(url: str = url) -> bool:
            row = await fetch_row(url, "SELECT count(*) FROM replication_probe WHERE marker = %s",
                                  (marker,))
            return row == (1,)
        await eventually(replicated, timeout=10, what=f"row on {url.rsplit('@', 1)[1]}")


async def test_nginx_spreads_connections_over_both_replicas(settings) -> None:
    ports = {await landed_on(settings.database_read_url) for _ in range(6)}
    assert ports == {port_of(url) for url in replica_urls()}


@pytest.mark.disruptive  # stops a replica for a while
async def test_reads_survive_a_replica_going_down(settings) -> None:
    stopped = run_stack("stop", "postgres-replica2")
    assert stopped.returncode == 0, stopped.stderr
    try:
        # Every connection succeeds, and all of them land on the replica still up.
        survivors = {await landed_on(settings.database_read_url) for _ in range(10)}
        assert survivors == {port_of(os.environ["DATABASE_REPLICA1_URL"])}
    finally:
        started = run_stack("up", "postgres-replica2")
        assert started.returncode == 0, started.stdout + started.stderr
