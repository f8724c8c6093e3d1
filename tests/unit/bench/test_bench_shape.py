"""bench/shape.py, bench/worker_profile.py and the feed's database naming: the pure parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


shape = _load("bench_shape", ROOT / "bench" / "shape.py")
worker_profile = _load("bench_worker_profile", ROOT / "bench" / "worker_profile.py")
sys.path.insert(0, str(ROOT / "connectors"))  # cdc_feed imports register beside it
cdc_feed = _load("bench_cdc_feed", ROOT / "connectors" / "cdc_feed.py")


def test_messages_in_reads_the_brokers_per_topic_counters_only() -> None:
    page = "\n".join([
        "# TYPE kafka_server_brokertopicmetrics_messagesinpersec_total counter",
        'kafka_server_brokertopicmetrics_messagesinpersec_total{topic="a-fraud-by-method",} 7.0',
        'kafka_server_brokertopicmetrics_messagesinpersec_total{topic="x.public.payments"} 12.0',
        "kafka_server_brokertopicmetrics_messagesinpersec_total 19.0",
    ])
    counts = shape.messages_in(page)
    assert counts == {"a-fraud-by-method": 7.0, "x.public.payments": 12.0}
    assert "kafka_server_brokertopicmetrics_messagesinpersec_total" not in counts


def test_a_frame_is_put_in_its_layer_and_the_event_loop_apart() -> None:
    assert worker_profile.layer_of("send (aiokafka/producer/producer.py:495)") \
        == "aiokafka produce"
    assert worker_profile.layer_of("Store._set (faust/stores/rocksdb.py:480)") == "faust tables"
    assert worker_profile.layer_of("Topic.send (faust/topics.py:190)") == "faust dispatch"
    assert worker_profile.layer_of("post (streams/agents/ledger.py:53)") == "our code"
    assert worker_profile.layer_of(
        "Worker.execute_from_commandline (mode/worker.py:264)") == "event loop (uvloop, C)"


def test_the_summary_counts_self_time_by_layer_and_inclusive_time_by_step() -> None:
    samples = [
        (["main (x.py:1)", "Ledger.post (streams/agents/ledger.py:53)",
          "execute (psycopg/cursor_async.py:1)"], 3),
        (["main (x.py:1)", "Fraud._by_customer (streams/agents/fraud.py:97)"], 1),
    ]
    text = worker_profile.summarise(samples)
    assert "4 samples" in text
    assert " 75.0%  psycopg" in text and " 25.0%  our code" in text
    assert " 75.0%  ledger and balances" in text and " 25.0%  fraud stages" in text
    speedscope = worker_profile.to_speedscope(samples, "t")
    assert speedscope["profiles"][0]["weights"] == [3, 1]  # type: ignore[index]


def test_a_feed_for_a_database_of_its_own_points_its_connector_and_admin_there() -> None:
    name = cdc_feed.FeedName("bench", 42, "abc123")
    config = cdc_feed.connector_config(name, {"database.dbname": "paystream"},
                                       dbname="paystream_bench_42_abc123")
    assert config["database.dbname"] == "paystream_bench_42_abc123"
    assert config["slot.name"] == "feed_bench_42_abc123"
    assert cdc_feed.with_dbname("postgresql://u:p@127.0.0.1:5432/paystream", "other") \
        == "postgresql://u:p@127.0.0.1:5432/other"
    assert "dbname=other" in cdc_feed.with_dbname("host=h user=u dbname=paystream", "other")
