"""Every topic the agents read or write: Debezium's, our internal ones, the dead letters."""

from __future__ import annotations

from typing import Any

import faust

from paystream.settings import Settings

# Raw bytes everywhere: adapters/cdc.py and messages.py decode, so a malformed
# message reaches our own code (and the dead-letter topic) instead of failing inside Faust.
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
        "value_serializer": "raw"}


class Topics:
    """The worker's topics, declared on its app for its settings."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self._app = app
        self._settings = settings
        self.payments = app.topic(settings.payments_topic, **_RAW)
        self.refunds = app.topic(settings.refunds_topic, **_RAW)
        self.dead_letters = app.topic(settings.dlq_topic, **_RAW)
        # Both CDC topics as one stream, for the agents that follow every transition.
        self.changes = app.topic(settings.payments_topic, settings.refunds_topic, **_RAW)
        # Fraud stages: repartitioned by customer, then by payment method, so each
        # velocity table is updated only by the worker that owns its key.
        self.fraud_by_customer = self._internal("fraud-by-customer")
        self.fraud_by_method = self._internal("fraud-by-method")
        # Decisions back on the payment's own partition (key {"id": ...}).
        self.verdicts = self._internal("fraud-verdicts")
        # Poller -> pending table owner; sent to the entry's partition explicitly.
        self.pending_commands = self._internal("pending-commands")
        # Ledger entries keyed by account, for the balances table.
        self.balance_deltas = self._internal("balance-deltas")

    def _internal(self, name: str) -> faust.TopicT:
        """A topic of this app, named after it, co-partitioned with the CDC topics."""
        return self._app.topic(f"{self._settings.faust_app_id}-{name}",
                               partitions=self._settings.topic_partitions, internal=True, **_RAW)

    async def ensure(self) -> list[str]:
        """Create the topics the worker subscribes to before it subscribes; the names created.

        Faust only creates internal topics that an agent consumes directly, and a
        consumer subscribing to a missing topic ignores it until the next
        rebalance: the refunds CDC topic (before the first refund) and our
        pending-commands topic would otherwise go unread.
        """
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        settings = self._settings
        names = [settings.payments_topic, settings.refunds_topic, settings.dlq_topic] + [
            t.get_topic_name() for t in (self.fraud_by_customer, self.fraud_by_method,
                                         self.verdicts, self.pending_commands,
                                         self.balance_deltas)
        ]
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            created = []
            for name in [n for n in names if n not in existing]:
                try:
                    await admin.create_topics([NewTopic(
                        name, settings.topic_partitions, settings.topic_replication_factor)])
                    created.append(name)
                except TopicAlreadyExistsError:
                    pass  # another worker made it meanwhile
            return created
        finally:
            await admin.close()
