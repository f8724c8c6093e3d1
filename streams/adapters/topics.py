"""Every topic the agents read or write: Debezium's, our internal ones, the dead letters."""

from __future__ import annotations

from typing import Any

import faust

from streams.app import app, settings

# Raw bytes everywhere: adapters/cdc.py and messages.py decode, so a malformed
# message reaches our own code (and the dead-letter topic) instead of failing inside Faust.
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
        "value_serializer": "raw"}


def internal(name: str) -> faust.TopicT:
    """A topic of this app, named after it, co-partitioned with the CDC topics."""
    return app.topic(f"{settings.faust_app_id}-{name}", partitions=settings.topic_partitions,
                     internal=True, **_RAW)


payments = app.topic(settings.payments_topic, **_RAW)
refunds = app.topic(settings.refunds_topic, **_RAW)
dead_letters = app.topic(settings.dlq_topic, **_RAW)
# Both CDC topics as one stream, for the agents that follow every transition.
changes = app.topic(settings.payments_topic, settings.refunds_topic, **_RAW)

# Fraud stages: repartitioned by customer, then by payment method, so each
# velocity table is updated only by the worker that owns its key.
fraud_by_customer = internal("fraud-by-customer")
fraud_by_method = internal("fraud-by-method")
# Decisions back on the payment's own partition (key {"id": ...}).
verdicts = internal("fraud-verdicts")
# Poller -> pending table owner; sent to the entry's partition explicitly.
pending_commands = internal("pending-commands")
# Ledger entries keyed by account, for the balances table.
balance_deltas = internal("balance-deltas")

# The pending table follows payments, refunds and the poller's commands:
# one stream, so every write to it happens on the partition that owns the id.
pending_sources = app.topic(settings.payments_topic, settings.refunds_topic,
                            pending_commands.get_topic_name(), **_RAW)


async def ensure_topics() -> list[str]:
    """Create the topics the worker subscribes to before it subscribes; the names created.

    Faust only creates internal topics that an agent consumes directly, and a
    consumer subscribing to a missing topic ignores it until the next
    rebalance: the refunds CDC topic (before the first refund) and our
    pending-commands topic would otherwise go unread.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    names = [settings.payments_topic, settings.refunds_topic, settings.dlq_topic] + [
        t.get_topic_name() for t in (fraud_by_customer, fraud_by_method, verdicts,
                                     pending_commands, balance_deltas)
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        created = []
        for name in missing:
            try:
                await admin.create_topics([NewTopic(name, settings.topic_partitions, 1)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another worker made it meanwhile
        return created
    finally:
        await admin.close()
