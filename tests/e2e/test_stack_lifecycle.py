"""`make up` is idempotent, and `make down` + `make up` keep data and resume CDC."""

from __future__ import annotations

import re

import psycopg
import pytest

from testkit.change_events import ChangeEvents
from testkit.rows import insert_blocked_payment
from testkit.stack import make, pids, run_stack

pytestmark = pytest.mark.disruptive


def test_a_second_make_up_changes_nothing() -> None:
    # Other suites stop and start parts of the stack; the first run brings all back.
    first = make("up")
    assert first.returncode == 0, first.stdout + first.stderr
    before = pids()
    assert all(before.values()), f"not everything is up after make up: {before}"
    again = make("up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert pids() == before
    reported = [line for line in again.stdout.splitlines() if re.match(r"\s+\S+\s+up\s", line)]
    assert len(reported) == len(before)
    assert all("already running" in line for line in reported), again.stdout


async def test_down_then_up_keeps_data_and_resumes_cdc_without_a_snapshot(settings) -> None:
    async with ChangeEvents(settings.kafka_bootstrap) as events:
        kept = await insert_blocked_payment(settings.database_url)
        await events.wait_for(kept, "c")
        resume_from = await events.positions()

    # A change committed while Connect is down must arrive once it is back.
    assert run_stack("stop", "connect").returncode == 0
    missed = await insert_blocked_payment(settings.database_url)

    down = make("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(pids().values()), "make down left processes behind"
    assert run_stack("status").returncode != 0

    up = make("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert run_stack("status").returncode == 0

    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM payments WHERE id = %s",
                                        (kept,))).fetchone()
    assert row == (1,), "a payment committed before make down is gone"

    async with ChangeEvents(settings.kafka_bootstrap, start=resume_from) as events:
        arrived = await events.wait_for(missed, "c", timeout=120)
    assert arrived["source"]["snapshot"] in ("false", None)
    # Resuming, not re-snapshotting: nothing after our offsets is a snapshot read.
    assert [e for e in events.seen if e["op"] == "r"] == []
