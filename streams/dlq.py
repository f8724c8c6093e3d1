"""The dead-letter topic: what agents could not process, with the reason; list and replay."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import EventT

from . import metrics

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2000


def _pack(raw: bytes | None, name: str) -> dict[str, str | None]:
    if raw is None:
        return {name: None}
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(raw).decode("ascii")}


def _unpack(entry: dict[str, Any], name: str) -> bytes | None:
    if entry.get(f"{name}_b64") is not None:
        return base64.b64decode(entry[f"{name}_b64"])
    value = entry.get(name)
    return None if value is None else str(value).encode("utf-8")


def envelope(
    *,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    agent: str,
    error: BaseException | str,
    key: bytes | None,
    value: bytes | None,
) -> dict[str, Any]:
    """The dead letter's JSON body: where the message came from, who failed, why, and it."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "agent": agent,
        "error": reason[:MAX_ERROR_CHARS],
        "error_type": "str" if isinstance(error, str) else type(error).__name__,
        "failed_at": datetime.now(UTC).isoformat(),
        **_pack(key, "key"),
        **_pack(value, "value"),
    }


async def dead_letter(event: EventT, agent: str, error: BaseException | str) -> None:
    """Send the message of event to the dead-letter topic; never raises."""
    msg = event.message
    body = envelope(topic=msg.topic, partition=msg.partition, offset=msg.offset, agent=agent,
                    error=error, key=_bytes(msg.key), value=_bytes(msg.value))
    await send_dead_letter(body, key=_bytes(msg.key))


async def send_dead_letter(body: dict[str, Any], *, key: bytes | None) -> None:
    """Publish a prepared envelope and wait for the broker to have it; never raises."""
    from .topics import dead_letters

    metrics.DEAD_LETTERS.labels(body["agent"]).inc()
    metrics.ERRORS.labels(body["agent"]).inc()
    log.warning("dead letter from %s: %s@%s/%s: %s", body["agent"], body["topic"],
                body["partition"], body["offset"], body["error"])
    try:
        fut = await dead_letters.send(key=key, value=json.dumps(body).encode())
        await fut
    except Exception:
        # Last resort: the log line carries everything needed to replay it by hand.
        log.exception("could not publish dead letter; its content: %s", json.dumps(body))


def _bytes(raw: Any) -> bytes | None:
    if raw is None or isinstance(raw, bytes):
        return raw
    return str(raw).encode("utf-8")


# --- reading and replaying (the `paystream dlq` commands) ----------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter topic, with its own position there."""

    dlq_partition: int
    dlq_offset: int
    body: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.dlq_partition}:{self.dlq_offset}"

    def original(self) -> tuple[str, bytes | None, bytes | None]:
        """(topic, key, value) of the message as it first arrived."""
        return str(self.body.get("topic")), _unpack(self.body, "key"), _unpack(self.body, "value")


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
            if not batch:
                break
            for tp, records in batch.items():
                found.extend(records)
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
        return found
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, *, timeout: float = 10.0) -> list[DeadLetter]:
    """Every entry of the dead-letter topic, oldest first per partition."""
    return [DeadLetter(rec.partition, rec.offset, _decode(rec.value))
            for rec in await read_topic(bootstrap, topic, timeout=timeout)]


def _decode(raw: bytes | None) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"error": "unreadable dead letter", "raw": repr(raw)}


def select(entries: list[DeadLetter], *, agent: str | None = None,
           refs: list[str] | None = None) -> Iterator[DeadLetter]:
    for entry in entries:
        if agent and entry.body.get("agent") != agent:
            continue
        if refs and entry.ref not in refs:
            continue
        yield entry


async def replay(bootstrap: str, entries: list[DeadLetter]) -> int:
    """Publish each entry's original message to its original topic again."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = 0
        for entry in entries:
            topic, key, value = entry.original()
            if not topic or topic == "None":
                continue
            await producer.send_and_wait(topic, value=value, key=key,
                                         headers=[("paystream-dlq-replay", entry.ref.encode())])
            sent += 1
        return sent
    finally:
        await producer.stop()
