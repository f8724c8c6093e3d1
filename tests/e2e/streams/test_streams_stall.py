"""A worker stuck behind one stage says so in /health/ (what `make status` asks), and recovers."""

from __future__ import annotations

import os

import psycopg

from testkit.waiting import eventually
from tests.e2e.streams.streams_harness import WATCHDOG_STALL_SECONDS, Db, Pipeline


async def test_a_stage_stalled_behind_a_lock_makes_the_worker_unhealthy_until_it_moves(
    pipeline: Pipeline, db: Db
) -> None:
    async def health() -> tuple[int, dict]:
        return await pipeline.main.get("/health/")

    assert (await health())[0] == 200
    merchant = await db.merchant(None)
    async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_ADMIN_URL"]) as admin:
        async with admin.transaction():
            # The ledger's inserts wait on this lock: the change events behind them
            # wait too, with their offsets uncommitted.
            await admin.execute("LOCK TABLE ledger_journals IN ACCESS EXCLUSIVE MODE")
            payments = [await db.payment(merchant, amount=2100 + i) for i in range(3)]

            async def stalled() -> dict | None:
                status, body = await health()
                return body if status == 503 and body["stalled_partitions"] else None

            body = await eventually(stalled, timeout=WATCHDOG_STALL_SECONDS + 120,
                                    what="the worker reporting the stall")
            assert body["status"] == "unhealthy" and not body["advancing"]
            assert any(p.startswith(pipeline.settings.payments_topic + ":")
                       for p in body["stalled_partitions"]), body

    async def healthy() -> bool:
        return (await health())[0] == 200

    await eventually(healthy, timeout=120, what="healthy again once the lock is gone")
    journals = await eventually(
        lambda: _journals(db, payments), timeout=60, what="the stalled payments journalled")
    assert len(journals) == len(payments)


async def _journals(db: Db, payments: list[str]) -> list | None:
    rows = await db.all("SELECT source_id FROM ledger_journals WHERE source_type = 'payment' "
                        "AND source_id = ANY(%s)", payments)
    return rows if len(rows) == len(payments) else None
