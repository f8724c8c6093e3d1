"""Sending to the dead-letter topic: what an agent could not process, with the reason.

Nothing is dropped: a message that fails is published here (and waited for)
before its offset moves on; ``paystream dlq`` lists and replays them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from faust.types import EventT, TopicT

from streams import metrics
from streams.dead_letters.envelope import envelope

log = logging.getLogger(__name__)


class DeadLetters:
    """The worker's sender to the dead-letter topic."""

    def __init__(self, topic: TopicT) -> None:
        self._topic = topic

    async def send(self, event: EventT[Any], agent: str, error: BaseException | str) -> None:
        """Send the message of event to the dead-letter topic; never raises."""
        msg = event.message
        body = envelope(topic=msg.topic, partition=msg.partition, offset=msg.offset,
                        agent=agent, error=error, key=_bytes(msg.key), value=_bytes(msg.value))
        await self.send_envelope(body, key=_bytes(msg.key))

    async def send_envelope(self, body: dict[str, Any], *, key: bytes | None) -> None:
        """Publish a prepared envelope and wait for the broker to have it; never raises."""
        metrics.DEAD_LETTERS.labels(body["agent"]).inc()
        metrics.ERRORS.labels(body["agent"]).inc()
        log.warning("dead letter from %s: %s@%s/%s: %s", body["agent"], body["topic"],
                    body["partition"], body["offset"], body["error"])
        try:
            fut = await self._topic.send(key=key, value=json.dumps(body).encode())
            await fut
        except Exception:
            # Last resort: the log line carries everything needed to replay it by hand.
            log.exception("could not publish dead letter; its content: %s", json.dumps(body))


def _bytes(raw: Any) -> bytes | None:
    if raw is None or isinstance(raw, bytes):
        return raw
    return str(raw).encode("utf-8")
