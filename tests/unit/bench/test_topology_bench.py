"""The topology bench's summary of a free phase, and its ratios to the first topology."""

from __future__ import annotations

from bench.topology_bench import ratios, summary


def test_the_summary_sums_the_kafka_nodes_and_the_workers() -> None:
    result = {"free_succeeded_per_s": 150.0, "free_machine_idle_share": 0.05,
              "free_cpu_ms_per_payment": {"kafka": 2.5, "kafka-2": 2.4, "kafka-3": 2.4,
                                          "worker": 3.4, "worker2": 0.1,
                                          "watchdog": 0.01, "total": 15.0}}
    assert summary(result) == {"approved_per_s": 150.0, "cpu_ms_total": 15.0,
                               "cpu_ms_kafka": 7.3, "cpu_ms_worker": 3.5,
                               "machine_idle_share": 0.05}


def test_ratios_are_to_the_first_topology_and_none_without_a_figure() -> None:
    rows = {"small": {"approved_per_s": 200.0, "cpu_ms_total": 7.0},
            "ha": {"approved_per_s": 50.0, "cpu_ms_total": None}}
    assert ratios(rows) == {"small": {"approved_per_s": 1.0, "cpu_ms_total": 1.0},
                            "ha": {"approved_per_s": 0.25, "cpu_ms_total": None}}
