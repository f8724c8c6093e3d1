"""A payment's records on Kafka, found without scanning topics: the partition from the key,
the first offset from the time, then forward only as far as the payment's story goes.

Every topic here is keyed so that one key always lands on one partition, by the
partitioner Kafka's Java client (Debezium, through Connect) and aiokafka (Faust)
share: murmur2 of the key bytes, made positive, modulo the partition count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from paystream.domain.trace import ChangeEvent, InternalMessage, TraceFacts
from paystream.settings import Settings
from streams.adapters.cdc import decode_change, id_key
from streams.errors import DecodeError

# Records read past the start of one partition at most: a busy partition (a key
# shared by many payments, as a bench's one customer is) must not turn a trace into
# a scan.
MAX_RECORDS_PER_PARTITION = 20_000

Decoder = Callable[[Any], ChangeEvent | InternalMessage | None]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a keyed record goes to (Java's Utils.toPositive(murmur2(key)) % n)."""
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


def json_key(value: str) -> bytes:
    """The key bytes of the fraud stages' topics: what streams/adapters/tables.json_key
    makes (orjson's JSON string, UTF-8), not imported from there because that module
    loads Faust, which a trace does not need (a unit test holds the two together)."""
    return orjson.dumps(value)


def internal_topic(settings: Settings, name: str) -> str:
    """An internal topic's name, as streams/adapters/topics.Topics names them."""
    return f"{settings.faust_app_id}-{name}"


@dataclass(frozen=True, slots=True)
class Probe:
    """Look for records with this key on this topic, from this time on."""

    topic: str
    key: bytes
    since_ms: int
    decode: Decoder


@dataclass
class KafkaFindings:
    changes: list[ChangeEvent] = field(default_factory=list)
    messages: list[InternalMessage] = field(default_factory=list)
    # topic[partition] -> (first offset read, offset after the last read, records read)
    read: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)

    @property
    def records_read(self) -> int:
        return sum(n for _, _, n in self.read.values())


def _change(topic: str, object_id: str) -> Decoder:
    def decode(record: Any) -> ChangeEvent | None:
        try:
            change = decode_change(record.key, record.value)
        except DecodeError:
            return None
        if change is None or change.key_id != object_id:
            return None
        return ChangeEvent(topic=topic, partition=record.partition, offset=record.offset,
                           object_id=object_id, op=change.op, old_status=change.old_status,
                           new_status=change.new_status, lsn=change.lsn, tx_id=change.tx_id,
                           commit_ms=change.source_ts_ms, kafka_ms=record.timestamp)
    return decode


def _message(topic: str, kind: str, payment_id: str, id_field: str,
             detail: Callable[[dict[str, Any]], str]) -> Decoder:
    def decode(record: Any) -> InternalMessage | None:
        try:
            value = orjson.loads(record.value)
        except (orjson.JSONDecodeError, TypeError):
            return None
        if not isinstance(value, dict) or value.get(id_field) != payment_id:
            return None
        return InternalMessage(topic=topic, partition=record.partition, offset=record.offset,
                               kind=kind, kafka_ms=record.timestamp, detail=detail(value))
    return decode


def probes_for(settings: Settings, facts: TraceFacts, *, margin: float) -> list[Probe]:
    """Where the payment's records are: its change events and its refunds', and the
    messages the agents sent about it, each looked for from its row's creation on."""
    p = facts.payment
    since = int((p.created_at - margin) * 1000)
    by_customer = internal_topic(settings, "fraud-by-customer")
    by_method = internal_topic(settings, "fraud-by-method")
    verdicts = internal_topic(settings, "fraud-verdicts")
    commands = internal_topic(settings, "pending-commands")
    probes = [
        Probe(settings.payments_topic, id_key(p.id), since,
              _change(settings.payments_topic, p.id)),
        Probe(by_customer, json_key(p.customer), since, _message(
            by_customer, "fraud check -> customer stage", p.id, "payment_id",
            lambda v: f"customer {v.get('customer')}")),
        Probe(by_method, json_key(p.payment_method), since, _message(
            by_method, "fraud check -> payment-method stage", p.id, "payment_id",
            lambda v: f"customer window {v.get('customer_count')} payment(s), "
                      f"{v.get('customer_amount')} {v.get('currency')}")),
        Probe(verdicts, id_key(p.id), since, _message(
            verdicts, "fraud verdict", p.id, "payment_id",
            lambda v: "approved" if v.get("approved") else f"blocked {v.get('rules_hit')}")),
        Probe(commands, id_key(p.id), since, _message(
            commands, "pending command (poller)", p.id, "id",
            lambda v: f"attempts {v.get('attempts')}, last error {v.get('last_error')}")),
    ]
    for refund in facts.refunds:
        r_since = int((refund.created_at - margin) * 1000)
        probes.append(Probe(settings.refunds_topic, id_key(refund.id), r_since,
                            _change(settings.refunds_topic, refund.id)))
        probes.append(Probe(commands, id_key(refund.id), r_since, _message(
            commands, f"pending command (poller) for {refund.id}", refund.id, "id",
            lambda v: f"attempts {v.get('attempts')}, last error {v.get('last_error')}")))
    return probes


async def find(settings: Settings, probes: Iterable[Probe], *, until_ms: int,
               timeout: float = 10.0,
               max_records: int = MAX_RECORDS_PER_PARTITION) -> KafkaFindings:
    """The probes' records, read forward from each start until a record later than
    until_ms, the partition's end (as it was when we looked), or max_records."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False,
                                request_timeout_ms=int(timeout * 1000),
                                # Only the records of the partitions we read: no prefetch
                                # of a whole busy partition beyond the part we need.
                                max_partition_fetch_bytes=256 * 1024,
                                # A broker holds a fetch with nothing new this long: a
                                # trace waits on no one's next record.
                                fetch_max_wait_ms=50)
    probes = list(probes)
    counts = await partition_counts(settings, {p.topic for p in probes}, timeout=timeout)
    await consumer.start()
    try:
        return await _find(consumer, probes, counts, until_ms, timeout, max_records)
    finally:
        await consumer.stop()


async def partition_counts(settings: Settings, topics: set[str], *,
                           timeout: float) -> dict[str, int]:
    """How many partitions each topic has (topics that do not exist are left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        described = await admin.describe_topics(sorted(topics))
    finally:
        await admin.close()
    return {d["topic"]: len(d["partitions"]) for d in described
            if d["error_code"] == 0 and d["partitions"]}


async def _find(consumer: AIOKafkaConsumer, probes: list[Probe], counts: dict[str, int],
                until_ms: int, timeout: float, max_records: int) -> KafkaFindings:
    found = KafkaFindings()
    by_tp: dict[TopicPartition, list[Probe]] = {}
    for probe in probes:
        if probe.topic not in counts:
            continue  # no such topic (e.g. no refund ever made): nothing to find
        tp = TopicPartition(probe.topic, partition_for(probe.key, counts[probe.topic]))
        by_tp.setdefault(tp, []).append(probe)
    if not by_tp:
        return found
    # Assigned (and paused, so nothing is fetched yet) before asking for offsets: the
    # assignment loads the topics' metadata at once, where offsets_for_times alone
    # waits for a metadata refresh (about 0.3 s).
    consumer.assign(list(by_tp))
    consumer.pause(*by_tp)
    starts = await consumer.offsets_for_times(
        {tp: min(p.since_ms for p in ps) for tp, ps in by_tp.items()})
    ends = await consumer.end_offsets(list(by_tp))
    remaining: dict[TopicPartition, int] = {}
    for tp, at in starts.items():
        if at is None or at.offset >= ends[tp]:
            continue  # nothing written since the payment was created
        consumer.seek(tp, at.offset)
        consumer.resume(tp)
        remaining[tp] = 0
        found.read[f"{tp.topic}[{tp.partition}]"] = (at.offset, at.offset, 0)
    done: set[TopicPartition] = set()

    def finish(tp: TopicPartition) -> None:
        done.add(tp)
        consumer.pause(tp)  # no more fetches for it while the others are read

    while active := [tp for tp in remaining if tp not in done]:
        batch = await consumer.getmany(*active, timeout_ms=int(timeout * 1000),
                                       max_records=2000)
        if not batch:
            raise TimeoutError(f"Kafka sent nothing for {timeout:g}s short of the end of "
                               + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in active))
        for tp, records in batch.items():
            keys = {p.key: p for p in by_tp[tp]}
            name = f"{tp.topic}[{tp.partition}]"
            for record in records:
                if tp in done:
                    break
                if record.timestamp > until_ms:
                    finish(tp)  # past the payment's last known step
                    break
                remaining[tp] += 1
                found.read[name] = (found.read[name][0], record.offset + 1, remaining[tp])
                wanted = keys.get(record.key)
                fact = wanted.decode(record) if wanted is not None else None
                if isinstance(fact, ChangeEvent):
                    found.changes.append(fact)
                elif fact is not None:
                    found.messages.append(fact)
                if record.offset + 1 >= ends[tp]:
                    finish(tp)
                elif remaining[tp] >= max_records:
                    found.truncated.append(name)
                    finish(tp)
    # Records of a partition are read in offset order; across them, by time.
    found.changes.sort(key=lambda c: (c.kafka_ms, c.topic, c.offset))
    found.messages.sort(key=lambda m: (m.kafka_ms, m.topic, m.offset))
    return found
