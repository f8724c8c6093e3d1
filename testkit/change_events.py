"""Debezium's change events on the stack's payments topic, read from its end or from offsets."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from testkit.waiting import eventually

PAYMENTS_TOPIC = "paystream.public.payments"


class ChangeEvents:
    """`async with ChangeEvents(bootstrap) as events:` reads the payments topic from its
    end now, or from `start` (offsets a reader before it got to)."""

    def __init__(self, bootstrap: str, *, start: dict[TopicPartition, int] | None = None) -> None:
        self.bootstrap = bootstrap
        self.start = start
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.seen: list[dict[str, Any]] = []

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

    async def wait_for(self, payment_id: str, op: str, timeout: float = 30) -> dict[str, Any]:
        """The first event of kind op ("c", "u", "d", "r") for payment_id."""
        async def arrived() -> dict[str, Any] | None:
            batch = await self.consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                self.seen.extend(json.loads(m.value) for m in msgs if m.value)
            return next((e for e in self.seen
                         if e["op"] == op and (e["after"] or e["before"])["id"] == payment_id),
                        None)
        return await eventually(arrived, timeout=timeout, what=f"op {op} for {payment_id}")
