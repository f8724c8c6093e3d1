"""What the worker's consumer commits: only what it handled in the group's current generation.

Faust acks events that were never handled:
- one it skips: fetched before a rebalance and read after it (its generation is
  not the app's), or read while flow control is suspended (a revocation);
- every event of a take_events batch when the batch ends, also when it ends
  because the worker is stopping and cancelled its agents in the middle of the
  batch (Faust's agents stop by cancellation, "which forces the stream to ack"),
  and also after a rebalance that happened while the batch was handled.
And its commit tolerates one missing offset at the head of what was acked: an
event at the committed offset that was never acked is committed past.

After a revocation Faust forgets the partition's acks and refetches it from the
committed offset; an ack from before lands in the new generation's list. Either
way a commit moves past a change event no worker handled. Seen with two workers
restarted one after the other under load: a payment left pending (never sent to
fraud), a succeeded payment with no journal, balances short by its amount.

Refusing those acks and holding those commits costs a redelivery at most, and
every handler is idempotent. A commit held for REFETCH_AFTER_SECONDS means the
event at its head will not come by itself (every agent handles a partition's
events in order, concurrency 1, so a later event acked first means that one was
skipped, not that it is slow): Faust drops a fetched record
below the offset it last read (a record of an earlier fetch delivered after a
seek), and a record whose delivery a revocation cancelled is marked read. So the
partition is sought back to its committed offset, which refetches it (and
redelivers what came after it); seen after a kill -9 under load, where the hold
alone stalled the worker until its watchdog ended it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

from streams import metrics

log = logging.getLogger(__name__)

# Commits run every second; this leaves a refetch already under way (a seek, then a
# fetch: well under a second) time to arrive before another one is asked for.
REFETCH_AFTER_SECONDS = 3.0


class CurrentGenerationConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, refusing acks while the app stops or flow control is
    suspended and of events from an earlier generation, and committing no further
    than the first offset not acked, refetching it when it does not come (see the
    module's docstring)."""

    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held_since: dict[Any, float] = {}
        self._refetches: set[asyncio.Task[None]] = set()

    def ack(self, message: Any) -> bool:
        app = self.app
        if app.topics.acks_enabled_for(message.topic) and (
                app.should_stop
                or not app.flow_control.is_active()
                or message.generation_id != app.consumer_generation_id):
            metrics.STALE_ACKS.inc()
            return False
        return bool(super().ack(message))


    def _new_offset(self, tp: Any) -> int | None:
        # Faust lets the acked offsets start one past the committed offset (its
        # check is `min(acked) - committed > 1`), so an event at the committed
        # offset that was never acked is committed past: seen after a rebalance,
        # an event never handed to the agent, its successors acked, the commit
        # moved over it. Our acking topics have no holes in their offsets (no
        # compaction, no transaction markers), so the commit waits for that event
        # instead, and refetches it when it does not come (the stall watchdog
        # stays the last resort: it restarts the worker, which reads it again).
        # Offsets the log no longer holds (a reset past deleted segments) are
        # Faust's gap, which it records from one past the committed offset: that
        # one is let through as Faust does.
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        gaps = self._gap[tp]
        if (acked and committed is not None and min(acked) > committed
                and not gaps.overlaps(committed) and not gaps.overlaps(committed + 1)):
            metrics.COMMITS_HELD.inc()
            self._refetch_if_held_too_long(tp, committed)
            return None
        self._held_since.pop(tp, None)
        offset: int | None = super()._new_offset(tp)
        return offset

    def _refetch_if_held_too_long(self, tp: Any, committed: int) -> None:
        now = self.clock()
        since = self._held_since.setdefault(tp, now)
        if now - since < REFETCH_AFTER_SECONDS:
            return
        self._held_since[tp] = now  # one refetch per period while it lasts
        metrics.HEAD_REFETCHES.inc()
        log.warning("%s: offset %d not handled for %.0fs while later ones were: "
                    "refetching from it", tp, committed, now - since)
        task = asyncio.ensure_future(self._refetch(tp, committed))
        self._refetches.add(task)
        task.add_done_callback(self._refetches.discard)

    async def _refetch(self, tp: Any, offset: int) -> None:
        try:
            await self.seek(tp, offset)
        except Exception as err:  # revoked meanwhile: its new owner reads from there
            log.warning("%s: refetch from %d failed: %r", tp, offset, err)


def install(app: Any) -> None:
    """Make the app's consumer a CurrentGenerationConsumer (before the consumer exists)."""
    use_consumer_class(app, CurrentGenerationConsumer, "current_acks.install()")


def use_consumer_class(app: Any, consumer_class: type, caller: str) -> None:
    """Make the app's consumer one of consumer_class: Faust makes it from the transport's
    Consumer class when first used, so only before that."""
    if getattr(app, "_consumer", None) is not None:
        raise RuntimeError(f"{caller} must run before the app's consumer exists")
    # The instance attribute shadows the class's, for this app's transport only.
    app.transport.Consumer = consumer_class
