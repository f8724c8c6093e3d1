"""bench/shape.py, bench/worker_profile.py and the feed's database naming: the pure parts."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench import shape, worker_profile
from testkit import cdc_feed


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


def test_requests_in_adds_up_each_kind_over_its_versions() -> None:
    page = "\n".join([
        "# TYPE kafka_network_requests_total counter",
        'kafka_network_requests_total{request="Produce",version="9"} 40.0',
        'kafka_network_requests_total{request="Produce",version="11",} 2.0',
        'kafka_network_requests_total{request="Fetch",version="11"} 7.0',
        'kafka_server_brokertopicmetrics_messagesinpersec_total{topic="t"} 99.0',
    ])
    assert shape.requests_in(page) == {"Produce": 42.0, "Fetch": 7.0}


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


def test_kafka_messages_add_up_every_broker_of_the_cluster() -> None:
    """Each broker counts the partitions it leads: with 3 nodes, one page is a third."""
    pages: list[list[str]] = [[], []]

    def broker(index: int) -> ThreadingHTTPServer:
        class Page(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages[index][-1].encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def page(messages: float, produce: float) -> str:
        return (f'kafka_server_brokertopicmetrics_messagesinpersec_total{{topic="t"}} '
                f'{messages}\nkafka_network_requests_total{{request="Produce",version="9"}} '
                f'{produce}\n')

    servers = [broker(0), broker(1)]
    try:
        counter = shape.KafkaMessages([f"http://127.0.0.1:{s.server_address[1]}/metrics"
                                       for s in servers])
        pages[0].append(page(10, 1))
        pages[1].append(page(20, 2))
        counter.start()
        pages[0].append(page(30, 3))  # +20 messages, +2 requests
        pages[1].append(page(60, 4))  # +40 messages, +2 requests
        assert counter.per_payment(10) == {"t": 6.0, "total": 6.0}
        assert counter.requests_per_payment(10) == {"Produce": 0.4, "total": 0.4}
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
