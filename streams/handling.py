"""What every agent loop shares: per-message error isolation, database retries, batching."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar, cast

import faust
from faust import Stream
from faust.types import AgentT, EventT, StreamT, TopicT
from psycopg import AsyncConnection

from streams import metrics
from streams.adapters.cdc import Change, decode_change
from streams.dead_letters.sender import DeadLetters
from streams.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")

# Batch size and wait of the agents that batch (batches()): a batch waits at
# most BATCH_WITHIN for stragglers, which bounds the latency it adds per hop.
BATCH_MAX = 200
BATCH_WITHIN = 0.02


def batches(stream: StreamT[Any], size: int = BATCH_MAX) -> AsyncIterator[Sequence[EventT[Any]]]:
    """An agent's events in batches of at most size, each waiting at most BATCH_WITHIN."""
    # Typed as StreamT, which omits take_events; an agent's stream is a faust.Stream.
    return cast(Stream[Any], stream).take_events(size, BATCH_WITHIN)


def install_batch_agent(app: faust.App, topic: TopicT, stage: Stage,
                        handle: Callable[[Sequence[EventT[Any]]], Awaitable[None]], *,
                        doc: str, size: int = BATCH_MAX, count_events: bool = True) -> None:
    """An agent named after stage that hands handle its topic's events in batches of at
    most size, each batch guarded (Stage.guard_batch); doc is its help in Faust's views."""

    async def consume(stream: StreamT[Any]) -> None:
        async for events in batches(stream, size):
            await stage.guard_batch(events, handle, count_events=count_events)

    consume.__doc__ = doc
    app.agent(topic, name=stage.name, concurrency=1)(consume)


def install_event_agent(app: faust.App, topic: TopicT, stage: Stage,
                        handle: Callable[[EventT[Any]], Awaitable[None]], *,
                        doc: str) -> AgentT[Any]:
    """An agent named after stage that hands handle its topic's events one at a time,
    each isolated (Stage.isolate); doc is its help in Faust's views."""

    async def consume(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            stage.count((event,))
            await stage.isolate(event, partial(handle, event))

    consume.__doc__ = doc
    return app.agent(topic, name=stage.name, concurrency=1)(consume)


def change_of(event: EventT[Any]) -> Change | None:
    """The change a CDC message carries; None for a tombstone (the delete before it
    carried the row)."""
    return decode_change(event.key, event.value)


class Stage:
    """One named step of the pipeline: its events counted, each message's failure
    dead-lettered under its name, its database calls retried through outages."""

    def __init__(self, name: str, runtime: Runtime, dead_letters: DeadLetters) -> None:
        self.name = name
        self.runtime = runtime
        self._dead_letters = dead_letters

    async def dead_letter(self, event: EventT[Any], error: BaseException | str) -> None:
        """Send event's message to the dead-letter topic under this step's name."""
        await self._dead_letters.send(event, self.name, error)

    def count(self, events: Iterable[EventT[Any]]) -> None:
        metrics.EVENTS.labels(self.name).inc(sum(1 for _ in events))

    async def with_db(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]], *,
                      what: str | None = None) -> T:
        """Run fn on a pooled connection, retrying while the database is unreachable."""

        return await self.runtime.with_db(fn, what=what or self.name)

    async def isolate(self, event: EventT[Any], fn: Callable[[], Awaitable[Any]]) -> bool:
        """Run the handling of one message; on any error dead-letter it. True if it
        succeeded."""
        try:
            await fn()
            return True
        except asyncio.CancelledError:
            raise
        except Exception as err:  # every failure is dead-lettered, never lost
            log.debug("%s failed on %s", self.name, event.message.tp, exc_info=True)
            await self.dead_letter(event, err)
            return False

    async def decode_each(self, events: Sequence[EventT[Any]],
                          decode: Callable[[EventT[Any]], T | None]
                          ) -> list[tuple[EventT[Any], T]]:
        """Each event with what decode made of it (None: nothing to do); an event that
        cannot be decoded is dead-lettered alone, the others go on."""
        decoded: list[tuple[EventT[Any], T]] = []
        for event in events:

            async def one(event: EventT[Any] = event) -> None:
                value = decode(event)
                if value is not None:
                    decoded.append((event, value))

            await self.isolate(event, one)
        return decoded

    async def guard_batch(self, events: Sequence[EventT[Any]],
                          fn: Callable[[Sequence[EventT[Any]]], Awaitable[None]], *,
                          count_events: bool = True) -> None:
        """Last line of defence for a batch: if fn escapes with an error, dead-letter every
        message of the batch (fn isolates messages itself, so this means a bug)."""
        if count_events:
            self.count(events)
        try:
            await fn(events)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.exception("%s: batch of %d failed; dead-lettering it", self.name, len(events))
            for event in events:
                await self.dead_letter(event, err)
