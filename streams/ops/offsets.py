"""Consumer group positions: start a new group at the end of the stream, or rewind one."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.adapters.topic_reader import partitions_of


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


async def start_at_end(bootstrap: str, group: str, topics: list[str]) -> dict[TopicPartition, int]:
    """Commit the current end of topics for a group that has not started yet.

    The worker reads partitions without a committed offset from the beginning
    (its internal topics must never skip anything); this makes a new group,
    a test's or a benchmark's, begin with what happens from now on instead.
    """
    tps = [TopicPartition(t, p) for t in topics for p in await partitions_of(bootstrap, t)]
    ends = await end_offsets(bootstrap, tps)
    await _commit(bootstrap, group, ends)
    return ends


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
