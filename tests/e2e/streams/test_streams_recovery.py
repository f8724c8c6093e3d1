"""Crashes, replays and rebalances: kill -9 mid-burst, replay from earliest, two workers."""

from __future__ import annotations

import os
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2

from paystream.domain import new_id
from paystream.settings import Settings
from streams.adapters.cdc import id_key
from streams.ops import offsets
from testkit.waiting import eventually
from tests.e2e.streams.streams_harness import (
    TERMINAL,
    Db,
    Pipeline,
    WebhookReceiver,
    authenticate,
    awaiting_action,
    intents_since,
    new_customer,
    three_d_secure_method,
)

BURST = int(os.environ.get("STREAMS_E2E_BURST", "500"))


async def caught_up(settings: Settings, group: str, tps: list[TopicPartition],
                    *, timeout: float) -> None:
    """Wait until the group has committed up to where these partitions end now."""
    targets = await offsets.end_offsets(settings.kafka_bootstrap, tps)

    async def check() -> bool:
        done = await offsets.committed(settings.kafka_bootstrap, group)
        return all(done.get(tp, 0) >= end for tp, end in targets.items())

    await eventually(check, timeout=timeout, interval=1.0, what=f"group caught up on {tps}")


async def money(db: Db, merchant_id: str, payments: list[str]) -> dict[str, Any]:
    """What the ledger says against what the payments and refunds say."""
    ledger = await db.one(
        "SELECT coalesce(sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END), 0) "
        "AS owed, count(DISTINCT journal_id) AS journals FROM ledger_entries "
        "WHERE account = %s", f"merchant_available:{merchant_id}:usd")
    paid = await db.one("SELECT coalesce(sum(amount), 0) AS total, count(*) AS n FROM payments "
                        "WHERE id = ANY(%s) AND status = 'succeeded'", payments)
    refunded = await db.one("SELECT coalesce(sum(amount), 0) AS total, count(*) AS n "
                            "FROM refunds WHERE payment_id = ANY(%s) AND status = 'succeeded'",
                            payments)
    notes = await db.all("SELECT event_id FROM merchant_notifications WHERE merchant_id = %s",
                         merchant_id)
    return {"owed": int(ledger["owed"]), "journals": int(ledger["journals"]),
            "succeeded": int(paid["total"]), "succeeded_n": int(paid["n"]),
            "refunded": int(refunded["total"]), "refunded_n": int(refunded["n"]),
            "notifications": sorted(n["event_id"] for n in notes)}


async def test_kill_9_mid_burst_then_replay_from_earliest_changes_nothing(
    pipeline: Pipeline, db: Db, receiver: WebhookReceiver, settings: Settings
) -> None:
    started = time.time()
    merchant = await db.merchant(receiver)
    payments: list[str] = []
    for i in range(BURST):
        # Three in ten go to Stripe and succeed, one is declined there, six are over
        # the amount limit and blocked by fraud: localstripe manages only a couple of
        # PaymentIntents a second, and every outcome must survive the crash.
        if i % 10 in (0, 3, 6):
            method, amount = "pm_card_visa", 100 + i
        elif i % 10 == 9:
            method, amount = "pm_card_chargeCustomerFail", 100 + i
        else:
            method, amount = "pm_card_visa", 2_000_000 + i
        payments.append(await db.payment(merchant, payment_method=method, amount=amount))

    async def some_terminal() -> int | None:
        row = await db.one("SELECT count(*) AS n FROM payments WHERE id = ANY(%s) "
                           "AND status = ANY(%s)", payments, list(TERMINAL))
        return row["n"] if 0 < row["n"] < BURST else None

    await eventually(some_terminal, timeout=120, interval=0.05, what="burst under way")
    worker = pipeline.main
    worker.kill9()
    worker.start()
    await worker.wait_ready()

    async def all_terminal() -> bool:
        row = await db.one("SELECT count(*) AS n FROM payments WHERE id = ANY(%s) "
                           "AND status = ANY(%s)", payments, list(TERMINAL))
        return row["n"] == BURST

    await eventually(all_terminal, timeout=900, interval=1.0, what="every payment terminal")
    # Some refunds, so the totals have something to subtract.
    succeeded = [r["id"] for r in await db.all(
        "SELECT id FROM payments WHERE id = ANY(%s) AND status = 'succeeded' ORDER BY id LIMIT 10",
        payments)]
    refunds = [await db.refund(p, amount=50) for p in succeeded]

    async def refunds_done() -> bool:
        rows = await db.all("SELECT status FROM refunds WHERE id = ANY(%s)", refunds)
        return all(r["status"] != "pending" for r in rows)

    await eventually(refunds_done, timeout=120, interval=0.5, what="refunds resolved")

    async def settled() -> dict[str, Any] | None:
        m = await money(db, merchant.id, payments)
        settled = m["journals"] == m["succeeded_n"] + m["refunded_n"]
        delivered = len(m["notifications"]) == BURST + len(refunds)
        return m if settled and delivered else None

    before = await eventually(settled, timeout=120, interval=1.0, what="ledger and outbox")
    assert before["owed"] == before["succeeded"] - before["refunded"]

    # Replay everything this worker group ever read.
    worker.stop()
    tps = await offsets.rewind(settings.kafka_bootstrap, pipeline.app_id)
    assert any(tp.topic == pipeline.settings.payments_topic for tp in tps)
    worker.start()
    await worker.wait_ready(timeout=300)
    cdc_topics = (pipeline.settings.payments_topic, pipeline.settings.refunds_topic)
    cdc = [tp for tp in tps if tp.topic in cdc_topics]
    await caught_up(settings, pipeline.app_id, cdc, timeout=900)
    for _ in range(4):  # then each internal hop (fraud stages, verdicts, balances...)
        internal = [tp for tp in await offsets.committed(settings.kafka_bootstrap,
                                                         pipeline.app_id)
                    if tp.topic.startswith(pipeline.app_id)]
        await caught_up(settings, pipeline.app_id, internal, timeout=300)

    after = await money(db, merchant.id, payments)
    assert after == before
    assert after["owed"] == after["succeeded"] - after["refunded"]
    statuses = await db.all("SELECT status, count(*) AS n FROM payments WHERE id = ANY(%s) "
                            "GROUP BY status", payments)
    assert {r["status"] for r in statuses} <= set(TERMINAL)
    dupes = await db.all("SELECT source_id FROM ledger_journals WHERE payment_id = ANY(%s) "
                         "GROUP BY source_type, source_id HAVING count(*) > 1", payments)
    assert dupes == []
    # At-least-once delivery may repeat an event; it never invents a second id for one.
    delivered = {r.event["id"] for r in receiver.events(merchant.id)}
    assert delivered == set(after["notifications"])
    # The crash never made a second PaymentIntent for a payment.
    charged = await intents_since(settings, started)
    mine = {p: pis for p, pis in charged.items() if p in set(payments)}
    assert mine and max(len(pis) for pis in mine.values()) == 1
    # The Faust balances table was rebuilt from the same journals: no double counting.
    status, body = await worker.get(f"/balances/merchant_available:{merchant.id}:usd/")
    assert status == 200 and body["balance"] == -after["owed"]


def partition_of(object_id: str, partitions: int) -> int:
    return (murmur2(id_key(object_id)) & 0x7FFFFFFF) % partitions


def owned(stats: dict[str, Any], topic: str) -> set[int]:
    return {int(p.rsplit(":", 1)[1]) for p in stats["partitions"] if p.startswith(topic + ":")}


async def test_two_workers_share_partitions_and_one_takes_over_the_others_tables(
    pipeline: Pipeline, db: Db, settings: Settings
) -> None:
    first = pipeline.main
    second = pipeline.new_worker(f"w{len(pipeline.workers) + 1}")
    payments_topic = pipeline.settings.payments_topic
    second.start()
    try:
        await second.wait_ready()

        async def shared() -> tuple[set[int], set[int]] | None:
            _, a = await first.get("/stats/")
            _, b = await second.get("/stats/")
            mine, theirs = owned(a, payments_topic), owned(b, payments_topic)
            whole = set(range(settings.topic_partitions))
            ok = mine and theirs and not (mine & theirs) and (mine | theirs) == whole
            return (mine, theirs) if ok else None

        mine, theirs = await eventually(shared, timeout=120, interval=1.0, what="shared group")

        # A payment that will sit in the first worker's pending table (3-D Secure).
        merchant = await db.merchant(None)
        method = await three_d_secure_method(settings)
        payment_id = new_id("pay")
        while partition_of(payment_id, settings.topic_partitions) not in mine:
            payment_id = new_id("pay")
        await db.conn.execute(
            "INSERT INTO payments (id, merchant_id, amount, currency, customer, payment_method) "
            "VALUES (%s, %s, 700, 'usd', %s, %s)",
            (payment_id, merchant.id, new_customer(), method))
        pi_id = await awaiting_action(db, settings, payment_id, timeout=120)

        # Both workers process: payments on every partition succeed.
        others = [await db.payment(merchant) for _ in range(8)]
        for p in others:
            row = await eventually(lambda p=p: db.terminal(p), timeout=90, what="terminal")
            assert row["status"] == "succeeded"

        async def entry_via(worker: Any) -> dict | None:
            status, body = await worker.get(f"/pending/{payment_id}/")
            return body if status == 200 and body.get("status") == "requires_action" else None

        # Asked on the second worker, the key's owner (the first) answers.
        assert (await eventually(lambda: entry_via(second), timeout=30,
                                 what="routed pending entry"))["stripe_id"] == pi_id

        first.stop()

        async def took_over() -> bool:
            _, b = await second.get("/stats/")
            return owned(b, payments_topic) == set(range(settings.topic_partitions))

        await eventually(took_over, timeout=120, interval=1.0, what="second owns everything")
        # Its own copy now, recovered from the changelog; and its poller resolves it.
        assert (await eventually(lambda: entry_via(second), timeout=60,
                                 what="entry on the survivor"))["id"] == payment_id
        await authenticate(settings, pi_id)
        row = await eventually(lambda: db.terminal(payment_id), timeout=60, what="terminal")
        assert row["status"] == "succeeded"
    finally:
        # Leave the session as it found it: the first worker alone.
        if first.proc is None or first.proc.poll() is not None:
            first.start()
            await first.wait_ready()
        second.stop()
        pipeline.workers.remove(second)
