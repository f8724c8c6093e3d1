"""`paystream trace` against a change topic of a million messages: it reads only what it needs.

The trace finds a payment's change events by key and time: the partition from the
key (murmur2, as Debezium's producer chose it), the first offset from
offsets_for_times at the payment's creation, then forward to its last step. So
its cost follows the records written around the payment, not the topic's size.
This bench fills a topic prefix of its own with N change records spread over a
day of Kafka timestamps (a day of traffic, as production would hold), puts a real
payment's change event among them at its own time, and times `paystream trace
--json` on it (CDC_TOPIC_PREFIX pointing at the bench's topics), printing how many
records it read. The topics are deleted at the end; the payment (born `blocked`,
which no worker acts on) stays in the stack's database.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import harness
from paystream.settings import Settings
from streams.adapters.cdc import id_key
from streams.ops.trace.kafka import partition_counts, partition_for
from testkit.rows import insert_blocked_payment
from testkit.topics import delete_topics
from testkit.waiting import eventually

PARTITIONS = 4
DAY_MS = 24 * 3600 * 1000
PAYSTREAM = Path(sys.executable).parent / "paystream"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def payment_record(settings: Settings, payment_id: str) -> tuple[bytes, bytes, int]:
    """(key, value, timestamp) of the payment's change event on the stack's own topic."""
    key = id_key(payment_id)
    counts = await partition_counts(settings, {settings.payments_topic}, timeout=10)
    tp = TopicPartition(settings.payments_topic,
                        partition_for(key, counts[settings.payments_topic]))
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, max(0, end - 2000))

        async def find() -> tuple[bytes, bytes, int] | None:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                if record.key == key and record.value is not None:
                    return record.key, record.value, record.timestamp
            return None

        return await eventually(find, timeout=60, interval=0.0,
                                what=f"{payment_id}'s change event on {settings.payments_topic}")
    finally:
        await consumer.stop()


async def fill(settings: Settings, topic: str, count: int,
               payment: tuple[bytes, bytes, int]) -> None:
    """count small records over the day before the payment's, keyed like change events, and
    the payment's own record at its time, each partition in time order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=50,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        key, value, at = payment
        start, step = at - DAY_MS, DAY_MS / count
        placed, pending = False, []
        started = time.monotonic()
        for i in range(count):
            ts = int(start + i * step)
            if not placed and ts >= at - 60_000:
                pending.append(await producer.send(topic, value=value, key=key, timestamp_ms=at))
                placed = True
            # The value stands for a change event's size; only the traced key is decoded.
            pending.append(await producer.send(
                topic, key=b'{"id":"pay_fill%d"}' % i, value=b"x" * 300, timestamp_ms=ts))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                if i % 200_000 < 20_000:
                    log(f"  filled {i + 1:,} of {count:,} ({time.monotonic() - started:.0f}s)")
        if not placed:
            pending.append(await producer.send(topic, value=value, key=key, timestamp_ms=at))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def trace(payment_id: str, prefix: str) -> dict[str, Any]:
    done = subprocess.run([str(PAYSTREAM), "trace", payment_id, "--json"],
                          env={**os.environ, "CDC_TOPIC_PREFIX": prefix},
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"paystream trace failed ({done.returncode}): {done.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


async def run(count: int, runs: int) -> dict[str, Any]:
    settings = Settings.from_env()
    prefix = f"tracebench{secrets.token_hex(3)}"
    topic = f"{prefix}.public.payments"
    payment_id = await insert_blocked_payment(settings.database_url)
    log(f"payment {payment_id}; waiting for its change event")
    record = await payment_record(settings, payment_id)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    try:
        started = time.monotonic()
        log(f"filling {topic} with {count:,} records over a day")
        await fill(settings, topic, count, record)
        filled_s = time.monotonic() - started
        answers = [trace(payment_id, prefix) for _ in range(runs)]
    finally:
        await delete_topics(settings.kafka_bootstrap, f"{prefix}.")
    kafka_ms = [a["took_ms"].get("kafka", 0) for a in answers]
    read = answers[-1].get("kafka_read") or {}
    return {
        "trace_topic_records": count + 1,
        "trace_fill_s": round(filled_s, 1),
        "trace_runs": runs,
        "trace_kafka_ms_median": statistics.median(kafka_ms),
        "trace_total_ms_median": statistics.median(a["took_ms"]["total"] for a in answers),
        "trace_kafka_source": answers[-1]["sources"].get("kafka"),
        "trace_kafka_read": {k: v for k, v in read.items() if k.startswith(topic)},
        # The payment's change event, read back from the bench's topic.
        "trace_found_its_change_event": any(
            c.get("topic") == topic for c in answers[-1]["facts"].get("change_events") or ()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__ or "", "Needs the stack up: eval \"$(make -s env)\"")
    parser.add_argument("--records", type=int, default=1_000_000,
                        help="records in the bench's change topic (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3,
                        help="traces timed; the median is printed (default 3)")
    args = harness.parse(parser, argv)
    result = asyncio.run(run(args.records, args.runs))
    harness.show(result, as_json=args.json)
    return 0 if result["trace_found_its_change_event"] else 1


if __name__ == "__main__":
    sys.exit(main())
