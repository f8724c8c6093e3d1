"""The CDC topics' one batch agent: decode each change once, hand it to every handler.

Three agents subscribed to the same topics would each get every message
through Faust's conductor and a stream of their own, and each decode its JSON:
a large share of a payment's CPU. One subscription hands the decoded batch to
each handler in process instead. The handlers keep their names (metrics, dead letters,
`paystream dlq list --agent ledger`), isolate their messages from each other
and run side by side, each with its own database round trips. The pending
table's handler writes its table as each event's own (tables.writing_for), so it
is one of them too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.types import EventT

from streams.adapters.cdc import Change
from streams.agents.fraud import ROUTE, Fraud
from streams.agents.ledger import AGENT as LEDGER
from streams.agents.ledger import Ledger
from streams.agents.notify import AGENT as NOTIFY
from streams.agents.notify import Notify
from streams.agents.pending import AGENT as PENDING
from streams.agents.pending import Pending
from streams.handling import Stage, change_of, install_batch_agent
from streams.worker_parts import WorkerParts

AGENT = "changes"
Handler = Callable[[Sequence[tuple[EventT[Any], Change]]], Awaitable[None]]


class Changes:
    """The one subscription to both CDC topics, handing each decoded batch to fraud,
    ledger, notify and the pending table."""

    def __init__(self, w: WorkerParts, fraud: Fraud, ledger: Ledger, notify: Notify,
                 pending: Pending) -> None:
        self._stage = w.stage(AGENT)
        payments = w.settings.payments_topic
        both = frozenset({payments, w.settings.refunds_topic})
        # (handler's stage, topics it follows, handler)
        self._handlers: tuple[tuple[Stage, frozenset[str], Handler], ...] = (
            (w.stage(ROUTE), frozenset({payments}), fraud.route),
            (w.stage(LEDGER), both, ledger.post),
            (w.stage(NOTIFY), both, notify.enqueue),
            (w.stage(PENDING), both, pending.track),
        )
        # Events are counted per handler (_hand_over), not here.
        install_batch_agent(w.app, w.topics.changes, self._stage, self._dispatch,
                            count_events=False,
                            doc="CDC changes, decoded once, to fraud, ledger, notify and pending")

    async def _dispatch(self, events: Sequence[EventT[Any]]) -> None:
        decoded = await self._stage.decode_each(events, change_of)
        await asyncio.gather(*(
            _hand_over(stage, handler,
                       [(e, c) for e, c in decoded if e.message.topic in follows])
            for stage, follows, handler in self._handlers
        ))


async def _hand_over(stage: Stage, handler: Handler,
                     batch: list[tuple[EventT[Any], Change]]) -> None:
    if batch:
        await stage.guard_batch([event for event, _ in batch], lambda _: handler(batch))
