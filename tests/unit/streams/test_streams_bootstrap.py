"""The worker is made by bootstrap.build() alone: importing streams/ creates nothing."""

from __future__ import annotations

import dataclasses

from paystream.settings import Settings
from streams.bootstrap import build

AGENTS = {"changes", "fraud-customer", "fraud-method", "submit", "refunds", "pending-commands",
          "balances"}
TABLES = {"pending", "velocity-customer", "velocity-method", "velocity-seen", "balances",
          "balance-applied"}


def _settings(app_id: str) -> Settings:
    return dataclasses.replace(Settings.from_env(), faust_app_id=app_id,
                               faust_store="memory://")


def test_build_installs_every_agent_table_timer_and_view() -> None:
    worker = build(_settings("paystream-build-test"))
    app = worker.app
    assert set(app.agents) == AGENTS
    assert {table.name for table in app.tables.values()} == TABLES
    assert len(app._app_tasks) >= 4  # the timers, plus the log level keeper
    routes = {getattr(r, "resource", None) and r.resource.canonical
              for r in app.web.web_app.router.routes()}
    assert {"/health/", "/ready/", "/pending/", "/stats/"} <= routes


def test_two_workers_built_side_by_side_share_nothing() -> None:
    first = build(_settings("paystream-first"))
    second = build(_settings("paystream-second"))
    assert first.app is not second.app and first.runtime is not second.runtime
    assert first.topics.verdicts.get_topic_name() == "paystream-first-fraud-verdicts"
    assert second.topics.verdicts.get_topic_name() == "paystream-second-fraud-verdicts"
    assert first.tables.pending is not second.tables.pending
