"""Consumer group positions: what a group committed, where partitions end, rewind a group."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets (partitions it never committed are left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def end_offsets(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    # A consumer that assigns partitions itself commits with no generation,
    # which the coordinator accepts only while the group has no members.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def rewind(bootstrap: str, group: str) -> list[TopicPartition]:
    """Move every committed offset of a stopped group back to the beginning of its partition:
    the next start replays everything (`kafka-consumer-groups --reset-offsets --to-earliest`)."""
    tps = list(await committed(bootstrap, group))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        beginning = dict(await consumer.beginning_offsets(tps))
    finally:
        await consumer.stop()
    await _commit(bootstrap, group, beginning)
    return tps
