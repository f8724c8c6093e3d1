"""The CDC topics' one batch agent: decode each change once, hand it to fraud, ledger and notify.

Three agents subscribed to the same topics would each get every message
through Faust's conductor and a stream of their own, and each decode its JSON:
a large share of a payment's CPU. One subscription hands the decoded batch to
each handler in process instead. The handlers keep their names (metrics, dead letters,
`paystream dlq list --agent ledger`), isolate their messages from each other
and run side by side, each with its own database round trips. The pending
table's agent stays apart: it writes a table, one message at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.types import EventT, StreamT

from streams.adapters import topics
from streams.adapters.cdc import Change
from streams.agents import fraud, ledger, notify
from streams.app import app, settings
from streams.handling import batches, change_in_scope, decode_each, guard_batch

AGENT = "changes"
Handler = Callable[[Sequence[tuple[EventT[Any], Change]]], Awaitable[None]]

_BOTH = frozenset({settings.payments_topic, settings.refunds_topic})
# (name, topics it follows, handler)
HANDLERS: tuple[tuple[str, frozenset[str], Handler], ...] = (
    (fraud.ROUTE, frozenset({settings.payments_topic}), fraud.route),
    (ledger.AGENT, _BOTH, ledger.post),
    (notify.AGENT, _BOTH, notify.enqueue),
)


@app.agent(topics.changes, name=AGENT, concurrency=1)
async def changes(stream: StreamT[Any]) -> None:
    async for events in batches(stream):
        # Counted per handler below, not here.
        await guard_batch(AGENT, events, _dispatch, count_events=False)


async def _dispatch(events: Sequence[EventT[Any]]) -> None:
    decoded = await decode_each(events, AGENT, change_in_scope)
    await asyncio.gather(*(
        _hand_over(name, handler, [(e, c) for e, c in decoded if e.message.topic in follows])
        for name, follows, handler in HANDLERS
    ))


async def _hand_over(name: str, handler: Handler, batch: list[tuple[EventT[Any], Change]]) -> None:
    if batch:
        await guard_batch(name, [event for event, _ in batch], lambda _: handler(batch))
