"""A worker stopped in the middle of a batch loses none of it: the batch is redelivered.

Faust stops its agents by cancelling them, and a batch (take_events) acks all its
events when it ends, cancelled or not; the stop's last commit then moved past
change events no handler finished (streams/current_acks.py refuses those acks).
Here the stack's workers are stopped while the ledger handler of the CDC batch
waits on a lock the test holds on ledger_journals, so the stop always lands in
the middle of the batch; once they run again the payment's journal is posted.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from paystream.domain import new_id
from testkit.rows import create_merchant, merchant_id
from testkit.stack import admin_url, start_worker, stop_worker, worker_names
from testkit.waiting import eventually

pytestmark = pytest.mark.disruptive


async def waiting_on_the_lock(admin: psycopg.AsyncConnection[Any]) -> int | None:
    """How many sessions wait for a lock on ledger_journals (None: none yet)."""
    row = await (await admin.execute(
        "SELECT count(*) FROM pg_locks l WHERE NOT l.granted "
        "AND l.relation = 'ledger_journals'::regclass")).fetchone()
    return int(row[0]) if row and row[0] else None


async def test_a_worker_stopped_mid_batch_posts_the_journal_once_it_runs_again() -> None:
    assert worker_names(), "the stack runs no worker: `make up` first"
    payment = new_id("pay")
    merchant = merchant_id("acct_stopmid")
    async with await psycopg.AsyncConnection.connect(admin_url(), autocommit=True) as admin, \
            await psycopg.AsyncConnection.connect(admin_url()) as holder:
        await create_merchant(admin, "stop mid batch e2e", merchant_id=merchant)
        # Journals can be read but not written while the holder's transaction is open.
        await holder.execute("LOCK TABLE ledger_journals IN SHARE ROW EXCLUSIVE MODE")
        stopped = False
        try:
            # Succeeded on arrival: the ledger handler posts its journal (and nothing
            # asks Stripe about it).
            await admin.execute(
                "INSERT INTO payments (id, merchant_id, amount, currency, status, customer, "
                "payment_method, idempotency_key, stripe_payment_intent_id) VALUES "
                "(%s, %s, 4321, 'usd', 'succeeded', 'c_stopmid', 'pm_card_visa', %s, %s)",
                (payment, merchant, new_id("idem"), new_id("pi")))
            await eventually(lambda: waiting_on_the_lock(admin), timeout=60,
                             what="a worker's ledger handler to wait on the lock")
            stop_worker()
            stopped = True
        finally:
            await holder.rollback()
            if stopped:
                start_worker()

        async def journal() -> int | None:
            row = await (await admin.execute(
                "SELECT count(*) FROM ledger_journals WHERE source_type = 'payment' "
                "AND source_id = %s", (payment,))).fetchone()
            return int(row[0]) if row and row[0] else None

        assert await eventually(journal, timeout=120,
                                what="the journal of the payment the stop cut off") == 1
