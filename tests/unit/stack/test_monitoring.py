"""The alert rules' tests' coverage, the Grafana dashboard and the monitoring parts (promtool and
the JMX port probe: tests/integration/stack/test_monitoring_promtool.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import grafana_dashboard as grafana
from stack import monitoring
from stack.components import components
from stack.config import Config

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "monitoring"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    checks = [check for test in tests for check in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [c for c in checks if c["alertname"] == rule["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{rule['alert']} never fires in a test"
        assert any(not c.get("exp_alerts") for c in mine), f"{rule['alert']} is never silent"


def test_every_alert_is_explained_for_on_call() -> None:
    readme = (ROOT / "README.md").read_text()
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert f"`{rule['alert']}`" in readme, f"README's Monitoring section lacks {rule['alert']}"


def test_the_grafana_dashboard_is_the_consoles_panels() -> None:
    committed = (MONITORING / "grafana" / "dashboards" / "paystream.json").read_text()
    assert committed == grafana.render(), "run python3 monitoring/grafana_dashboard.py"
    config = json.loads((ROOT / "api" / "console" / "panels.json").read_text())
    console = {s["expr"] for s in config["stats"]} | {
        q["expr"] for p in config["panels"] for q in p["queries"]}
    dashboard = {t["expr"] for p in json.loads(committed)["panels"] for t in p.get("targets", [])}
    assert dashboard == console


def test_compose_scrapes_the_same_jobs_on_the_same_metrics_ports() -> None:
    local = Config()
    mine = {t["labels"]["job"] for t in monitoring.scrape_targets(local)}
    compose = json.loads((MONITORING / "targets-compose.json").read_text())
    assert {t["labels"]["job"] for t in compose} == mine
    ports = {t["labels"]["job"]: t["targets"][0].rsplit(":", 1)[1] for t in compose}
    assert ports["kafka"] == str(local.kafka_metrics_port)
    assert ports["connect"] == str(local.connect_metrics_port)


@pytest.mark.parametrize("name", ["jmx-kafka.yml", "jmx-connect.yml"])
def test_jmx_exporter_rules_read_only_named_mbeans(name: str) -> None:
    config = yaml.safe_load((MONITORING / name).read_text())
    assert config["includeObjectNames"], "without it the agent reads every MBean at each scrape"
    # The agent's patterns are not anchored: an attribute must end at its colon.
    for rule in config["rules"]:
        assert rule["pattern"].endswith(":") or ": (" in rule["pattern"], rule["pattern"]


def test_prometheus_keeps_its_data_in_the_stack_folder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYSTREAM_STACK_DIR", str(tmp_path))
    monkeypatch.delenv("STACK_TOPOLOGY", raising=False)  # the small one, whatever runs here
    cfg = Config()
    prometheus = next(c for c in components(cfg) if c.name == "prometheus")
    prometheus.prepare()
    assert (tmp_path / "prometheus" / "alerts.yml").read_text() == (
        MONITORING / "alerts.yml").read_text()
    targets = json.loads((tmp_path / "prometheus" / "targets" / "paystream.json").read_text())
    assert {"targets": [f"127.0.0.1:{cfg.api_port}"], "labels": {"job": "api"}} in targets
    assert f"--storage.tsdb.path={tmp_path / 'prometheus' / 'data'}" in prometheus.command()
    assert "PROMETHEUS_URL" in cfg.endpoints()
