"""Reading a whole topic (or its tail since a time) outside any consumer group."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


class TopicReadIncomplete(RuntimeError):
    """The broker stopped answering before the topic's end (as it was at the start)."""


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of a topic ([] if it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for d in described if d["error_code"] == 0
                  for p in d["partitions"])


async def read_topic(bootstrap: str, topic: str, *, timeout: float = 10.0,
                     since_ms: int | None = None) -> list[Any]:
    """Every record of a topic (or those since a time), oldest first per partition."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, request_timeout_ms=int(timeout * 1000))
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        if since_ms is not None:
            starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp, found_at in starts.items():
                if found_at is None:
                    end[tp] = 0  # nothing that recent
                else:
                    consumer.seek(tp, found_at.offset)
        found: list[Any] = []
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=int(timeout * 1000))
            for records in batch.values():
                found.extend(records)
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
            if remaining and not batch:
                # A partial read would look like a complete one to every caller.
                at = {tp: await consumer.position(tp) for tp in remaining}
                short = ", ".join(f"{tp.partition}@{at[tp]}/{end[tp]}"
                                  for tp in sorted(remaining, key=lambda tp: tp.partition))
                raise TopicReadIncomplete(
                    f"{topic}: nothing new for {timeout:g}s short of the end "
                    f"(partition@position/end: {short})")
        return found
    finally:
        await consumer.stop()
