"""Acks count only for what the worker handled in the consumer group's current generation.

Faust acks events that were never handled:
- one it skips: fetched before a rebalance and read after it (its generation is
  not the app's), or read while flow control is suspended (a revocation);
- every event of a take_events batch when the batch ends, also when it ends
  because the worker is stopping and cancelled its agents in the middle of the
  batch (Faust's agents stop by cancellation, "which forces the stream to ack"),
  and also after a rebalance that happened while the batch was handled.

A stopping worker then commits those acks: the batch it was cut off from is
never redelivered.

After a revocation Faust forgets the partition's acks and refetches it from the
committed offset. An ack from before then lands in the new generation's list,
where it marks done an offset this generation has not handled yet; the next
commit moves past it. If the partition moves again before the refetched copy
is handled, no worker ever handles that change event. Seen with two workers
restarted one after the other under load: a payment left pending, a succeeded
payment with no journal, balances short by its amount.

Refusing those acks costs a redelivery at most, and every handler is idempotent.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

from streams import metrics


class CurrentGenerationConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, refusing acks while the app stops or flow control is
    suspended, and of events from an earlier generation (see the module's docstring)."""

    def ack(self, message: Any) -> bool:
        app = self.app
        if app.topics.acks_enabled_for(message.topic) and (
                app.should_stop
                or not app.flow_control.is_active()
                or message.generation_id != app.consumer_generation_id):
            metrics.STALE_ACKS.inc()
            return False
        return bool(super().ack(message))


def install(app: Any) -> None:
    """Make the app's consumer a CurrentGenerationConsumer (before the consumer exists)."""
    if getattr(app, "_consumer", None) is not None:
        raise RuntimeError("current_acks.install() must run before the app's consumer exists")
    # The instance attribute shadows the class's, for this app's transport only.
    app.transport.Consumer = CurrentGenerationConsumer
