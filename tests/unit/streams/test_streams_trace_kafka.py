"""Where `paystream trace` looks on Kafka: the partition of a key, the key bytes of each topic."""

from __future__ import annotations

import pytest

from paystream.domain.trace import PaymentRow, RefundRow, TraceFacts
from paystream.settings import Settings
from streams.adapters import tables
from streams.adapters.cdc import id_key
from streams.ops.trace.kafka import json_key, partition_for, probes_for


@pytest.mark.parametrize(("key", "signed"), [
    # Kafka's own test vectors for Utils.murmur2 (clients/.../utils/UtilsTest.java).
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_partition_is_javas_positive_murmur2_modulo_the_partitions(key: bytes,
                                                                    signed: int) -> None:
    for partitions in (1, 3, 4, 7):
        assert partition_for(key, partitions) == (signed & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize(("key", "partition"), [
    # Seen on the stack's 4-partition topics: two written by Debezium (Java), one by Faust.
    (b'{"id":"pay_gjwHFtb7xMYFUXR9vFrHvCvd"}', 0),
    (b'{"id":"pay_tXWfsvNtqtQQ9A9qsDIXg4gb"}', 1),
    (b'"cus_bench"', 1),
])
def test_partition_matches_where_the_producers_put_real_records(key: bytes,
                                                                partition: int) -> None:
    assert partition_for(key, 4) == partition


@pytest.mark.parametrize("value", ["cus_bench", "Ö", "c_ñ5|#", "pm_card_visa"])
def test_fraud_topic_keys_are_the_bytes_the_worker_writes(value: str) -> None:
    assert json_key(value) == tables.json_key(value)


def test_probes_cover_the_payment_its_refunds_and_the_agents_messages() -> None:
    settings = Settings()
    payment = PaymentRow(id="pay_1", merchant_id="acct_1", amount=100, currency="usd",
                         status="succeeded", customer="c_1", payment_method="pm_1",
                         amount_refunded=0, stripe_payment_intent_id="pi_1", failure_code=None,
                         failure_message=None, created_at=1000.0, updated_at=1001.0)
    refund = RefundRow("re_1", 50, "usd", "succeeded", None, 2000.0, 2001.0)
    probes = probes_for(settings, TraceFacts(payment, now=3000.0, refunds=(refund,)),
                        margin=10.0)
    found = {(p.topic, p.key, p.since_ms) for p in probes}
    assert found == {
        ("paystream.public.payments", id_key("pay_1"), 990_000),
        ("paystream-fraud-by-customer", b'"c_1"', 990_000),
        ("paystream-fraud-by-method", b'"pm_1"', 990_000),
        ("paystream-fraud-verdicts", id_key("pay_1"), 990_000),
        ("paystream-pending-commands", id_key("pay_1"), 990_000),
        ("paystream.public.refunds", id_key("re_1"), 1_990_000),
        ("paystream-pending-commands", id_key("re_1"), 1_990_000),
    }
