"""What every agent loop shares: per-message error isolation, database retries, batching."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import psycopg
from faust import Stream
from faust.types import EventT, StreamT
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout

from streams import metrics
from streams.adapters.cdc import Change, decode_change
from streams.dead_letters import dead_letter
from streams.runtime import runtime

log = logging.getLogger(__name__)
T = TypeVar("T")

# Batch size and wait of the agents that batch (batches()): a batch waits at
# most BATCH_WITHIN for stragglers, which bounds the latency it adds per hop.
BATCH_MAX = 200
BATCH_WITHIN = 0.02
# Database outages are waited out, not dead-lettered: the message is fine,
# and the consumer simply stops advancing until Postgres is back.
_DB_RETRY_MAX_DELAY = 5.0
TRANSIENT_DB_ERRORS = (psycopg.OperationalError, PoolTimeout)


def batches(stream: StreamT[Any], size: int = BATCH_MAX) -> AsyncIterator[Sequence[EventT[Any]]]:
    """An agent's events in batches of at most size, each waiting at most BATCH_WITHIN."""
    # Typed as StreamT, which omits take_events; an agent's stream is a faust.Stream.
    return cast(Stream[Any], stream).take_events(size, BATCH_WITHIN)


def change_in_scope(event: EventT[Any]) -> Change | None:
    """The change a CDC message carries; None for a tombstone (the delete before it
    carried the row)."""
    return decode_change(event.key, event.value)


async def decode_each(events: Sequence[EventT[Any]], agent: str,
                      decode: Callable[[EventT[Any]], T | None]) -> list[tuple[EventT[Any], T]]:
    """Each event with what decode made of it (None: nothing to do); an event that
    cannot be decoded is dead-lettered alone, the others go on."""
    decoded: list[tuple[EventT[Any], T]] = []
    for event in events:

        async def one(event: EventT[Any] = event) -> None:
            value = decode(event)
            if value is not None:
                decoded.append((event, value))

        await isolate(event, agent, one)
    return decoded


async def retry_db(fn: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Run fn, retrying for as long as the database is unreachable."""
    delay = 0.1
    while True:
        try:
            return await fn()
        except TRANSIENT_DB_ERRORS as err:
            log.warning("%s: database unavailable (%s); retrying in %.1fs",
                        what, type(err).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _DB_RETRY_MAX_DELAY)


async def with_db(fn: Callable[[AsyncConnection[Any]], Awaitable[T]], *, what: str) -> T:
    """Run fn on a pooled connection, retrying while the database is unreachable."""

    async def run() -> T:
        pool = await runtime.pool()
        async with pool.connection() as conn:
            return await fn(conn)

    return await retry_db(run, what=what)


async def isolate(event: EventT[Any], agent: str, fn: Callable[[], Awaitable[Any]]) -> bool:
    """Run the handling of one message; on any error dead-letter it. True if it succeeded."""
    try:
        await fn()
        return True
    except asyncio.CancelledError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is dead-lettered, never lost
        log.debug("%s failed on %s", agent, event.message.tp, exc_info=True)
        await dead_letter(event, agent, err)
        return False


def count(agent: str, events: Iterable[EventT[Any]]) -> None:
    metrics.EVENTS.labels(agent).inc(sum(1 for _ in events))


async def guard_batch(agent: str, events: Sequence[EventT[Any]],
                      fn: Callable[[Sequence[EventT[Any]]], Awaitable[None]], *,
                      count_events: bool = True) -> None:
    """Last line of defence for a batch: if fn escapes with an error, dead-letter every
    message of the batch (fn isolates messages itself, so this means a bug)."""
    if count_events:
        count(agent, events)
    try:
        await fn(events)
    except asyncio.CancelledError:
        raise
    except Exception as err:  # noqa: BLE001
        log.exception("%s: batch of %d failed; dead-lettering it", agent, len(events))
        for event in events:
            await dead_letter(event, agent, err)
