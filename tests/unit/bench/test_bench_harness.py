"""bench/harness.py: the benchmarks' shared command line and result printing."""

from __future__ import annotations

import json

import pytest

from bench import harness


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
