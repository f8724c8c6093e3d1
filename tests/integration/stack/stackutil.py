"""Helpers for tests that look at or steer the local stack through `python3 -m stack`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from conftest import eventually

PAYMENTS_TOPIC = "paystream.public.payments"
ROOT = Path(__file__).resolve().parents[3]



def run_stack(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stack", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def make(target: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", target], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def pids() -> dict[str, int | None]:
    out = run_stack("json")
    assert out.returncode == 0, out.stderr
    return {name: state["pid"] for name, state in json.loads(out.stdout).items()}


async def insert_payment(database_url: str, *, amount: int = 1234) -> str:
    """Inserts a merchant and a payment straight into the primary; returns its id.

    The payment is born `blocked` (terminal) so the stream workers, if running,
    leave it alone: these tests look at the plumbing, not at payment processing.
    """
    suffix = uuid.uuid4().hex[:12]
    merchant, payment = f"mer_stack_{suffix}", f"pay_stack_{suffix}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO merchants (id, name, api_key_hash, webhook_secret) "
            "VALUES (%s, 'stack test', %s, 'whsec_test')", (merchant, f"hash_{suffix}"))
        await conn.execute(
            "INSERT INTO payments (id, merchant_id, amount, currency, customer, payment_method,"
            " status) VALUES (%s, %s, %s, 'usd', 'cus_stack', 'pm_card_visa', 'blocked')",
            (payment, merchant, amount))
    return payment


class ChangeEvents:
    """Reads Debezium change events on the payments topic from its end, or from `start`."""

    def __init__(self, bootstrap: str, *, start: dict[TopicPartition, int] | None = None) -> None:
        self.bootstrap = bootstrap
        self.start = start
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.seen: list[dict] = []

    async def __aenter__(self) -> ChangeEvents:
        await self.consumer.start()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            [topic] = await admin.describe_topics([PAYMENTS_TOPIC])
        finally:
            await admin.close()
        parts = [TopicPartition(PAYMENTS_TOPIC, p["partition"]) for p in topic["partitions"]]
        assert len(parts) == 4, f"{PAYMENTS_TOPIC} partitions: {parts}"
        self.consumer.assign(parts)
        # Fix the start offsets now: seek_to_end alone resolves lazily, at the
        # first fetch, which could come after the change we are waiting for.
        start = self.start or await self.consumer.end_offsets(parts)
        for tp in parts:
            self.consumer.seek(tp, start[tp])
        return self

    async def positions(self) -> dict[TopicPartition, int]:
        """Where reading stands now: the offsets a later reader can go on from."""
        return {tp: await self.consumer.position(tp) for tp in self.consumer.assignment()}

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def wait_for(self, payment_id: str, op: str, timeout: float = 30) -> dict:
        async def arrived() -> dict | None:
            batch = await self.consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                self.seen.extend(json.loads(m.value) for m in msgs if m.value)
            return next((e for e in self.seen
                         if e["op"] == op and (e["after"] or e["before"])["id"] == payment_id),
                        None)
        return await eventually(arrived, timeout=timeout, what=f"op {op} for {payment_id}")
