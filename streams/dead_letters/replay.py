"""The operator's side of the dead-letter topic: list its entries and replay them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.adapters.topic_reader import read_topic
from streams.dead_letters.envelope import unpack


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
        return str(self.body.get("topic")), unpack(self.body, "key"), unpack(self.body, "value")


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
