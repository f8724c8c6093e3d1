"""`paystream trace` on the running stack: payments made through its API, traced, and the trace
checked against Kafka (its offsets hold the payment's records) and Postgres (its rows match).

Run with `-s` to see how long each trace took and how big the CDC topic was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg.rows import dict_row

from api.merchants import NewMerchant
from paystream.settings import Settings
from streams.adapters.cdc import id_key
from testkit.ports import free_port
from testkit.rows import create_merchant
from testkit.waiting import eventually
from testkit.webhooks import WebhookReceiver

PAYSTREAM = Path(sys.executable).parent / "paystream"
THREE_D_SECURE_CARD = "4000002500003155"
TERMINAL = ("succeeded", "failed", "canceled", "blocked")

pytestmark = pytest.mark.skipif(not os.environ.get("API_URL"),
                                reason="needs the running stack: eval \"$(make -s env)\"")


@dataclass
class Stack:
    """The running stack as a merchant and an operator use it."""

    settings: Settings
    api_url: str
    http: aiohttp.ClientSession
    db: psycopg.AsyncConnection[Any]
    merchant: NewMerchant
    # The merchant's webhooks (the stack's notifier needs somewhere to deliver).
    hooks: WebhookReceiver

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None,
                  key: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {key or self.merchant.api_key}"}
        if method == "POST":
            headers["Idempotency-Key"] = f"e2e-trace-{uuid.uuid4()}"
        async with self.http.request(method, self.api_url + path, json=body,
                                     headers=headers) as resp:
            return resp.status, await resp.json()

    async def card(self, number: str = "4242424242424242") -> str:
        """A payment method of our own at Stripe: the fraud rules count payments per
        method, and pm_card_visa is everybody's."""
        async with self.http.post(
                f"{self.settings.stripe_api_base}/v1/payment_methods",
                headers={"Authorization": f"Bearer {self.settings.stripe_api_key}"},
                data={"type": "card", "card[number]": number, "card[exp_month]": "12",
                      "card[exp_year]": "2030", "card[cvc]": "123"}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            return str(body["id"])

    async def pay(self, *, amount: int = 1050, payment_method: str) -> str:
        status, body = await self.api("POST", "/v1/payments", {
            "amount": amount, "currency": "usd", "payment_method": payment_method,
            "customer": f"c_trace_{uuid.uuid4().hex[:12]}", "description": "e2e trace"})
        assert status == 201, body
        return str(body["id"])

    async def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self.db.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            return list(await cur.fetchall())

    async def status(self, payment_id: str) -> str:
        return str((await self.rows("SELECT status FROM payments WHERE id = %s",
                                    payment_id))[0]["status"])

    async def settled(self, payment_id: str, status: str, *, journal: bool) -> bool:
        """In the status, with its journal (if one is due) and its merchant event told."""
        if await self.status(payment_id) != status:
            return False
        if journal and not await self.rows(
                "SELECT 1 FROM ledger_journals WHERE source_type = 'payment' "
                "AND source_id = %s", payment_id):
            return False
        return bool(await self.rows(
            "SELECT 1 FROM merchant_notifications WHERE object_id = %s "
            "AND status = 'delivered'", payment_id))


@pytest.fixture(name="stack", scope="module")
async def stack_fixture(settings: Settings) -> AsyncIterator[Stack]:
    hooks = WebhookReceiver()
    await hooks.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http, \
                await psycopg.AsyncConnection.connect(settings.database_url,
                                                      autocommit=True) as db:
            merchant = await create_merchant(db, "e2e trace", webhook_url=hooks.url("hook"))
            yield Stack(settings, os.environ["API_URL"].rstrip("/"), http, db, merchant, hooks)
    finally:
        await hooks.stop()


def run_trace(payment_id: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([str(PAYSTREAM), "trace", "--json", payment_id],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    return done, time.monotonic() - started


async def trace_of(stack: Stack, payment_id: str, label: str) -> dict[str, Any]:
    done, wall = run_trace(payment_id)
    assert done.returncode == 0, done.stderr
    trace: dict[str, Any] = json.loads(done.stdout)
    read = trace["kafka_read"] or {}
    cdc = await records_on(stack.settings, stack.settings.payments_topic)
    print(f"\n[trace {label}] {payment_id}: {trace['took_ms']['total']} ms gathering "
          f"(postgres {trace['took_ms'].get('postgres')}, kafka {trace['took_ms'].get('kafka')},"
          f" stripe {trace['took_ms'].get('stripe')}, worker {trace['took_ms'].get('worker')} "
          f"ms), {wall:.2f} s for the whole command; {sum(r['records'] for r in read.values())}"
          f" Kafka records read on {len(read)} partitions; the payments CDC topic holds "
          f"{cdc} records")
    return trace


async def records_on(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.topics()
            partitions = set(range(settings.topic_partitions))
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def read_back(settings: Settings, topic: str, partition: int, offset: int) -> Any:
    """The record at exactly that place, read directly."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
        [record] = batch[tp]
        assert record.offset == offset
        return record
    finally:
        await consumer.stop()


async def check_against_kafka(stack: Stack, trace: dict[str, Any],
                              object_ids: set[str]) -> None:
    """Every change event and message the trace names is at its offset, and is this
    payment's (or its refunds')."""
    facts = trace["facts"]
    for change in facts["change_events"]:
        record = await read_back(stack.settings, change["topic"], change["partition"],
                                 change["offset"])
        assert record.key == id_key(change["object_id"])
        assert change["object_id"] in object_ids
        value = json.loads(record.value)
        assert value["op"] == change["op"] and value["source"]["lsn"] == change["lsn"]
        assert record.timestamp == change["kafka_ms"]
    for message in facts["internal_messages"]:
        record = await read_back(stack.settings, message["topic"], message["partition"],
                                 message["offset"])
        value = json.loads(record.value)
        assert (value.get("payment_id") or value.get("id")) in object_ids


async def check_against_postgres(stack: Stack, trace: dict[str, Any]) -> None:
    facts = trace["facts"]
    pid = trace["payment_id"]
    [row] = await stack.rows("SELECT * FROM payments WHERE id = %s", pid)
    for column in ("status", "amount", "currency", "customer", "payment_method",
                   "stripe_payment_intent_id", "failure_code", "amount_refunded"):
        assert facts["payment"][column] == row[column], column
    decisions = await stack.rows("SELECT approved, rules_hit FROM fraud_decisions "
                                 "WHERE payment_id = %s", pid)
    assert [(d["approved"], d["rules_hit"]) for d in decisions] == (
        [] if facts["fraud_decision"] is None else
        [(facts["fraud_decision"]["approved"], facts["fraud_decision"]["rules_hit"])])
    refunds = [r["id"] for r in await stack.rows(
        "SELECT id FROM refunds WHERE payment_id = %s ORDER BY created_at, id", pid)]
    assert [r["id"] for r in facts["refunds"]] == refunds
    ids = [pid, *refunds]
    journals = await stack.rows(
        "SELECT id FROM ledger_journals WHERE (source_type, source_id) IN "
        "(SELECT 'payment', %s UNION ALL SELECT 'refund', unnest(%s::text[])) "
        "ORDER BY created_at, id", pid, refunds)
    assert [j["id"] for j in facts["journals"]] == [j["id"] for j in journals]
    entries = await stack.rows("SELECT count(*) AS n FROM ledger_entries "
                               "WHERE journal_id = ANY(%s)", [j["id"] for j in journals])
    assert sum(len(j["entries"]) for j in facts["journals"]) == entries[0]["n"]
    notes = await stack.rows("SELECT event_id, status, attempts FROM merchant_notifications "
                             "WHERE object_id = ANY(%s) ORDER BY created_at, event_id", ids)
    assert [(n["event_id"], n["status"], n["attempts"])
            for n in facts["merchant_notifications"]] == [
        (n["event_id"], n["status"], n["attempts"]) for n in notes]
    subs = await stack.rows("SELECT object_id, attempts, stripe_id FROM stripe_submissions "
                            "WHERE object_id = ANY(%s) ORDER BY object_id", ids)
    assert sorted((s["object_id"], s["attempts"], s["stripe_id"])
                  for s in facts["stripe_submissions"]) == [
        (s["object_id"], s["attempts"], s["stripe_id"]) for s in subs]


def path(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {leg["step"]: leg for leg in trace["path"]}


def cdc_moves(trace: dict[str, Any], object_id: str) -> list[tuple[str | None, str | None]]:
    return [(c["old_status"], c["new_status"]) for c in trace["facts"]["change_events"]
            if c["object_id"] == object_id]


async def test_a_succeeded_payment_is_traced_from_commit_to_merchant_webhook(
    stack: Stack
) -> None:
    pid = await stack.pay(payment_method=await stack.card())
    await eventually(lambda: stack.settled(pid, "succeeded", journal=True), timeout=90,
                     what=f"{pid} succeeded, journalled and told")

    trace = await trace_of(stack, pid, "succeeded")

    assert trace["status"] == "succeeded" and trace["terminal"]
    assert trace["waiting_for"] == [] and trace["where"] == "succeeded: done"
    assert {name: state.split(":")[0] for name, state in trace["sources"].items()} == {
        "postgres": "ok", "kafka": "ok", "stripe": "ok", "worker": "ok"}
    assert trace["sources"]["worker"] == "ok: not in the pending table"
    legs = path(trace)
    assert all(legs[step]["at"] is not None for step in legs), trace["path"]
    assert legs["committed"]["note"] == "Debezium source.ts_ms"
    assert [m for m in cdc_moves(trace, pid) if m[0] != m[1]] == [
        (None, "pending"), ("pending", "succeeded")]
    kinds = {m["kind"] for m in trace["facts"]["internal_messages"]}
    assert {"fraud check -> customer stage", "fraud check -> payment-method stage"} <= kinds
    intent = trace["facts"]["stripe_payment_intent"]
    assert (intent["status"], intent["amount"]) == ("succeeded", 1050)
    assert intent["charges"] and intent["charges"][0]["status"] == "succeeded"
    await check_against_kafka(stack, trace, {pid})
    await check_against_postgres(stack, trace)

    # The readable form, as README shows it.
    text = subprocess.run([str(PAYSTREAM), "trace", pid], capture_output=True, text=True,
                          timeout=120)
    assert text.returncode == 0, text.stderr
    assert f"Payment {pid}: succeeded: done" in text.stdout
    print(text.stdout)


async def test_a_refunded_payment_shows_its_refund_and_both_journals(stack: Stack) -> None:
    pid = await stack.pay(amount=2000, payment_method=await stack.card())
    await eventually(lambda: stack.settled(pid, "succeeded", journal=True), timeout=90,
                     what=f"{pid} succeeded")
    status, refund = await stack.api("POST", "/v1/refunds", {"payment": pid, "amount": 500})
    assert status == 201, refund

    async def refunded() -> bool:
        rows = await stack.rows(
            "SELECT 1 FROM refunds r JOIN ledger_journals j ON j.source_type = 'refund' "
            "AND j.source_id = r.id JOIN payments p ON p.id = r.payment_id "
            "JOIN merchant_notifications n ON n.object_id = r.id AND n.status = 'delivered' "
            "WHERE r.id = %s AND r.status = 'succeeded' AND p.amount_refunded = 500",
            refund["id"])
        return bool(rows)

    await eventually(refunded, timeout=90, what=f"refund {refund['id']} settled")

    trace = await trace_of(stack, pid, "refunded")

    assert trace["waiting_for"] == [], trace["waiting_for"]
    assert [r["id"] for r in trace["facts"]["refunds"]] == [refund["id"]]
    assert [j["id"] for j in trace["facts"]["journals"]] == [
        f"jrn_payment_{pid}", f"jrn_refund_{refund['id']}"]
    assert [m for m in cdc_moves(trace, refund["id"]) if m[0] != m[1]] == [
        (None, "pending"), ("pending", "succeeded")]
    # The commit into succeeded comes from the change event, not the row (updated since).
    assert path(trace)["status_written"]["note"].startswith("commit of -> succeeded")
    assert trace["facts"]["stripe_payment_intent"]["charges"][0]["amount_refunded"] == 500
    await check_against_kafka(stack, trace, {pid, refund["id"]})
    await check_against_postgres(stack, trace)


async def test_a_fraud_blocked_payment_never_reaches_stripe(stack: Stack) -> None:
    # Over the single-payment limit for usd (paystream/domain/fraud.py: 1,000,000).
    pid = await stack.pay(amount=1_000_001, payment_method=await stack.card())
    await eventually(lambda: stack.settled(pid, "blocked", journal=False), timeout=90,
                     what=f"{pid} blocked and told")

    trace = await trace_of(stack, pid, "blocked")

    assert trace["status"] == "blocked" and trace["waiting_for"] == []
    legs = path(trace)
    # Over the customer's window amount too (500,000): both rules hit.
    assert legs["fraud_decided"]["note"].startswith("blocked: ")
    assert "amount_limit" in trace["facts"]["fraud_decision"]["rules_hit"]
    assert legs["stripe_called"]["note"] == "not applicable (blocked)"
    assert legs["journal_posted"]["note"] == "not applicable (blocked)"
    assert trace["sources"]["stripe"] == "not applicable: no PaymentIntent"
    assert trace["facts"]["stripe_submissions"] == []
    assert [m for m in cdc_moves(trace, pid) if m[0] != m[1]] == [
        (None, "pending"), ("pending", "blocked")]
    await check_against_kafka(stack, trace, {pid})
    await check_against_postgres(stack, trace)


async def test_a_payment_waiting_for_3d_secure_says_what_it_waits_for(stack: Stack) -> None:
    # Honestly unsettled on a healthy stack: Stripe waits for the customer.
    pid = await stack.pay(payment_method=await stack.card(THREE_D_SECURE_CARD))

    async def in_pending_table() -> dict[str, Any] | None:
        if await stack.status(pid) != "requires_action":
            return None
        done, _ = run_trace(pid)
        trace: dict[str, Any] = json.loads(done.stdout)
        return trace if trace["facts"]["pending_entry"] is not None else None

    trace = await eventually(in_pending_table, timeout=90, interval=1.0,
                             what=f"{pid} requires_action and in the pending table")
    print(f"\n[trace requires_action] {pid}: {trace['took_ms']['total']} ms gathering")

    assert not trace["terminal"]
    assert trace["where"].startswith("requires_action: waiting for the customer to complete "
                                     "3-D Secure at Stripe")
    assert trace["sources"]["worker"] == "ok: in the pending table"
    assert trace["facts"]["pending_entry"]["status"] == "requires_action"
    assert trace["facts"]["stripe_payment_intent"]["status"] == "requires_action"
    legs = path(trace)
    assert legs["status_written"]["at"] is not None
    assert legs["journal_posted"]["at"] is None and legs["merchant_notified"]["at"] is None
    await check_against_kafka(stack, trace, {pid})
    await check_against_postgres(stack, trace)


async def test_a_source_that_is_down_is_shown_without_failing_the_rest(stack: Stack) -> None:
    pid = await stack.pay(amount=1_000_002, payment_method=await stack.card())
    closed = free_port()
    done, _ = run_trace(pid, KAFKA_BOOTSTRAP=f"127.0.0.1:{closed}",
                        FAUST_WEB_PORT=str(free_port()))
    assert done.returncode == 0, done.stderr
    trace = json.loads(done.stdout)
    assert trace["sources"]["postgres"] == "ok"
    assert trace["sources"]["kafka"].startswith("unavailable: "), trace["sources"]
    assert trace["sources"]["worker"].startswith("unavailable: "), trace["sources"]
    assert trace["facts"]["change_events"] is None
    assert path(trace)["in_kafka"]["note"] == "Kafka not read"


def test_an_unknown_payment_is_an_error() -> None:
    done, _ = run_trace("pay_" + "0" * 24)
    assert done.returncode == 1
    assert "no such payment" in done.stderr and done.stdout == ""
