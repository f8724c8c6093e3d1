"""bench/harness.py: the benchmarks' shared command line, result printing and percentiles."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_harness", Path(__file__).resolve().parents[3] / "bench" / "harness.py")
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


def test_results_print_as_aligned_key_value_lines(capsys: pytest.CaptureFixture[str]) -> None:
    harness.show({"payments": 60, "commit_to_succeeded_p50_s": 0.25}, as_json=False)
    assert capsys.readouterr().out == (
        "payments                   60\n"
        "commit_to_succeeded_p50_s  0.25\n")


def test_results_print_as_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    harness.show({"payments": 60, "statuses": {"blocked": 2}}, as_json=True)
    assert json.loads(capsys.readouterr().out) == {"payments": 60, "statuses": {"blocked": 2}}


def test_the_parser_takes_the_docstrings_first_paragraph_and_adds_json_last() -> None:
    parser = harness.parser("Title line.\n\nDetails.", epilog="After.")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = harness.parse(parser, ["--json"])
    assert (args.json, args.seconds) == (True, 5.0)
    assert parser.description == "Title line."
    usage = parser.format_usage()
    assert usage.index("--seconds") < usage.index("--json")


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert harness.percentile(values, 0.5) == 51.0
    assert harness.percentile(values, 0.99) == 99.0
    assert harness.percentile([3.0], 0.99) == 3.0
    assert math.isnan(harness.percentile([], 0.5))


def test_free_port_can_be_bound() -> None:
    assert 0 < harness.free_port() < 65536
