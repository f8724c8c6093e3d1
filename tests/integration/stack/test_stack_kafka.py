"""Kafka, Kafka Connect and Debezium on the real stack, seen through aiokafka."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from pathlib import Path

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from connectors import register as connectors_register
from testkit.change_events import ChangeEvents
from testkit.rows import insert_blocked_payment
from testkit.stack import ROOT
from testkit.waiting import eventually


async def test_aiokafka_produces_to_and_consumes_from_the_broker(settings) -> None:
    """The aiokafka faust-streaming runs on speaks the pinned broker's protocol."""
    topic = f"probe.{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k") for i in range(3)]
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=f"probe-{topic}")
    await consumer.start()
    try:
        got: list[bytes] = []

        async def read() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            got.extend(m.value for msgs in batch.values() for m in msgs)
            return len(got) >= 3
        await eventually(read, timeout=20, what="three messages back")
        await consumer.commit()
    finally:
        await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
    assert got == [b"m0", b"m1", b"m2"]
    assert [r.offset for r in sent] == [0, 1, 2]


async def test_insert_and_update_stream_as_debezium_change_events(settings) -> None:
    async with ChangeEvents(settings.kafka_bootstrap) as events:
        payment = await insert_blocked_payment(settings.database_url, amount=4321)
        created = await events.wait_for(payment, "c")
        assert created["before"] is None
        assert created["after"]["amount"] == 4321 and created["after"]["currency"] == "usd"
        assert {"lsn", "txId", "ts_ms"} <= created["source"].keys()

        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            await conn.execute("UPDATE payments SET description = 'changed' WHERE id = %s",
                               (payment,))
        updated = await events.wait_for(payment, "u")
    assert updated["before"]["description"] is None
    assert updated["after"]["description"] == "changed"
    assert updated["before"]["status"] == updated["after"]["status"] == "blocked"


def test_registering_the_connector_twice_leaves_one_running() -> None:
    url = os.environ["CONNECT_URL"]
    config = ROOT / "connectors" / "payments.json"
    register = connectors_register.register
    assert register(url, config, timeout=60) == register(url, config, timeout=60)
    with urllib.request.urlopen(f"{url}/connectors?expand=status", timeout=10) as resp:
        connectors = json.load(resp)
    ours = [n for n in connectors if n == connectors_register.connector_name(Path(config))]
    assert ours == ["paystream-payments"]
    status = connectors["paystream-payments"]["status"]
    assert status["connector"]["state"] == "RUNNING"
    assert [t["state"] for t in status["tasks"]] == ["RUNNING"]
