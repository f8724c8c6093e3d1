"""The console proxy's allow-list: the panels' PromQL with the page's parameters, nothing else."""

from __future__ import annotations

import json

import pytest

from api.console_auth import login_url
from api.console_queries import (
    MAX_RANGE_SECONDS,
    PANELS,
    QueryRefused,
    checked_params,
    load_allowed,
    panel_queries,
)
from paystream.settings import Settings

CONFIG = {
    "stats": [{"id": "a", "expr": "sum(up)"}],
    "panels": [{"id": "b", "queries": [{"expr": "rate(x[1m])", "legend": ""},
                                       {"expr": "sum(up)", "legend": ""}]}],
}
ALLOWED = panel_queries(CONFIG)


def test_every_stat_and_chart_query_is_allowed() -> None:
    assert ALLOWED == {"sum(up)", "rate(x[1m])"}
    config = json.loads(PANELS.read_text())
    shipped = load_allowed()
    assert all(stat["expr"] in shipped for stat in config["stats"])
    assert all(q["expr"] in shipped for panel in config["panels"] for q in panel["queries"])


def test_only_the_pages_parameters_are_forwarded() -> None:
    assert checked_params("query", {"query": "sum(up)", "timeout": "1h", "limit": "9"},
                          ALLOWED) == {"query": "sum(up)"}
    assert checked_params("query", {"query": "sum(up)", "time": "1700000000.5"},
                          ALLOWED) == {"query": "sum(up)", "time": "1700000000.5"}
    ranged = {"query": "rate(x[1m])", "start": "1000", "end": "1900", "step": "10",
              "lookback_delta": "1y"}
    assert checked_params("query_range", ranged, ALLOWED) == {
        "query": "rate(x[1m])", "start": "1000", "end": "1900", "step": "10"}
    assert checked_params("alerts", {"query": "anything"}, ALLOWED) == {}


@pytest.mark.parametrize("query", ["up", 'count_over_time({__name__=~".+"}[1h])', "",
                                   "sum(up) ", "SUM(up)"])
def test_other_promql_is_refused(query: str) -> None:
    for endpoint in ("query", "query_range"):
        with pytest.raises(QueryRefused, match="not one of the console's panels"):
            checked_params(endpoint, {"query": query, "start": "0", "end": "60", "step": "10"},
                           ALLOWED)


@pytest.mark.parametrize("params", [
    {"start": "0", "end": str(MAX_RANGE_SECONDS + 1), "step": "60"},
    {"start": "0", "end": "3600", "step": "0.01"},
    {"start": "0", "end": "3600", "step": "0"},
    {"start": "60", "end": "0", "step": "10"},
    {"start": "nan", "end": "60", "step": "10"},
    {"start": "now", "end": "60", "step": "10"},
    {"end": "60", "step": "10"},
])
def test_ranges_the_page_never_asks_for_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(QueryRefused):
        checked_params("query_range", {"query": "rate(x[1m])", **params}, ALLOWED)
    with pytest.raises(QueryRefused):
        checked_params("query", {"query": "sum(up)", "time": "inf"}, ALLOWED)


def test_login_url_remembers_where_the_operator_was_going() -> None:
    assert login_url("/console/") == "/console/login"
    assert login_url("/console/payments/pay_1?x=1") == (
        "/console/login?next=%2Fconsole%2Fpayments%2Fpay_1%3Fx%3D1")


def test_console_sessions_last_a_working_day_unless_told() -> None:
    assert Settings().console_session_seconds == 8 * 3600
    assert Settings.from_env({"CONSOLE_SESSION_SECONDS": "600"}).console_session_seconds == 600
