"""Crash-only: kill -9 a component, one `make up` brings it back, and CDC never stalls silently."""

from __future__ import annotations

import os
import signal
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from testkit.change_events import ChangeEvents
from testkit.rows import insert_blocked_payment
from testkit.stack import make, pids, run_stack
from testkit.waiting import eventually, wait_until
from tests.e2e.slotholder import SlotHolder

pytestmark = pytest.mark.disruptive

CONNECTOR, SLOT, PUBLICATION = "paystream-payments", "paystream", "paystream"


def connect_api(method: str, path: str) -> int:
    req = urllib.request.Request(f"{os.environ['CONNECT_URL']}{path}", method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status


def slot_holder_pid() -> int | None:
    with psycopg.connect(os.environ["DATABASE_ADMIN_URL"], autocommit=True) as conn:
        row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                           (SLOT,)).fetchone()
    assert row is not None, f"no slot {SLOT}"
    return row[0]


def debezium_conninfo() -> str:
    primary = conninfo_to_dict(os.environ["DATABASE_URL"])
    password = os.environ.get("DEBEZIUM_DB_PASSWORD", "debezium")
    return (f"host={primary['host']} port={primary['port']} dbname={primary['dbname']} "
            f"user=debezium password={password}")


def status_line(name: str) -> str:
    out = run_stack("status").stdout
    return next((line.strip() for line in out.splitlines() if line.split()[:1] == [name]), "")


@pytest.fixture
def stale_session() -> Iterator[SlotHolder]:
    """The task stopped, a session of the debezium user takes the slot, the task resumes.

    The resumed task cannot get the slot and retries while Connect reports it
    RUNNING: what a task abandoned after a broker crash left behind.
    """
    holder = SlotHolder(debezium_conninfo(), SLOT, PUBLICATION)
    try:
        assert connect_api("PUT", f"/connectors/{CONNECTOR}/stop") in (200, 202, 204)
        wait_until(lambda: slot_holder_pid() is None, timeout=60,
                   what="the stopped task to release the slot")
        holder.open()
        assert slot_holder_pid() == holder.pid
        assert connect_api("PUT", f"/connectors/{CONNECTOR}/resume") in (200, 202, 204)
        yield holder
    finally:
        holder.close()
        connect_api("PUT", f"/connectors/{CONNECTOR}/resume")
        run_stack("up", "watchdog")


async def a_new_payment_reaches_the_topic(settings, timeout: float = 60) -> None:
    async with ChangeEvents(settings.kafka_bootstrap) as events:
        payment = await insert_blocked_payment(settings.database_url)
        await events.wait_for(payment, "c", timeout=timeout)


async def test_status_names_a_stale_session_on_the_slot_and_make_up_ends_it(
        settings, request: pytest.FixtureRequest) -> None:
    # Without the watchdog nothing repairs it before we look.
    assert run_stack("stop", "watchdog").returncode == 0
    holder = request.getfixturevalue("stale_session")

    def reported() -> str | None:
        line = status_line("connect")
        return line if f"slot held by stale pid {holder.pid}" in line else None
    line = wait_until(reported, timeout=90, what="status naming the stale pid")
    assert line.split()[1] == "DOWN", line
    assert run_stack("status").returncode != 0

    up = make("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"connect: terminated pid {holder.pid} " in up.stdout, up.stdout
    assert run_stack("status").returncode == 0
    assert not holder.alive()
    await a_new_payment_reaches_the_topic(settings)


async def test_the_watchdog_ends_a_stale_session_on_the_slot_by_itself(
        settings, request: pytest.FixtureRequest) -> None:
    assert run_stack("up", "watchdog").returncode == 0
    log = Path(os.environ["PAYSTREAM_STACK_DIR"]) / "logs" / "watchdog.log"
    holder = request.getfixturevalue("stale_session")

    wait_until(lambda: f"terminated pid {holder.pid} " in log.read_text(), timeout=90,
               what="the watchdog to end the stale session")
    wait_until(lambda: run_stack("status").returncode == 0, timeout=60, interval=2,
               what="status healthy again")
    await a_new_payment_reaches_the_topic(settings)


async def test_one_make_up_after_kill_9_of_the_broker_and_a_change_from_the_outage_arrives(
        settings) -> None:
    async with ChangeEvents(settings.kafka_bootstrap) as events:
        before = await insert_blocked_payment(settings.database_url)
        await events.wait_for(before, "c")
        resume_from = await events.positions()

    broker = pids()["kafka"]
    assert broker is not None
    os.kill(broker, signal.SIGKILL)
    wait_until(lambda: pids()["kafka"] is None, timeout=30, what="the broker gone")
    during = await insert_blocked_payment(settings.database_url)  # committed while Kafka is down

    up = make("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert run_stack("status").returncode == 0
    async with ChangeEvents(settings.kafka_bootstrap, start=resume_from) as events:
        await events.wait_for(during, "c", timeout=60)


def busy_query(url: str, started: threading.Event) -> None:
    """A query that keeps its backend busy: busy backends outlive a killed postmaster."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            started.set()
            conn.execute("SELECT count(*) FROM generate_series(1, 100000000000)")
    except psycopg.Error:
        pass  # the server went away under it, as intended


async def test_one_make_up_after_kill_9_of_a_replica_and_the_primary(settings) -> None:
    started = threading.Event()
    busy = threading.Thread(target=busy_query, args=(settings.database_url, started), daemon=True)
    busy.start()
    assert started.wait(10)

    async def running() -> bool:
        async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_ADMIN_URL"]) as c:
            row = await (await c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE 'SELECT count(*) FROM generate_series%'")).fetchone()
        return row is not None and row[0] > 0
    await eventually(running, timeout=10, what="the busy query running")

    before = pids()
    for name in ("postgres-replica1", "postgres-primary"):
        pid = before[name]
        assert pid is not None, f"{name} is not running"
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pids()["postgres-primary"] is None, timeout=30, what="the primary gone")

    up = make("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "orphaned server process" in up.stdout, up.stdout
    status = run_stack("status")
    assert status.returncode == 0, status.stdout
    busy.join(timeout=10)
    await a_new_payment_reaches_the_topic(settings)
