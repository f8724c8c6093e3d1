"""The ha topology's processes and ports, derived from the port settings; small as before."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from paystream.settings import Settings
from stack import monitoring
from stack.commands import env_lines
from stack.components import components
from stack.config import Config

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PAYSTREAM_STACK_DIR", str(tmp_path))
    monkeypatch.delenv("STACK_TOPOLOGY", raising=False)
    for name in ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "KAFKA_METRICS_PORT", "CONNECT_PORT",
                 "CONNECT_METRICS_PORT", "API_PORT", "FAUST_WEB_PORT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_small_is_the_default_and_runs_one_of_each(folder: Path) -> None:
    cfg = Config()
    assert cfg.topology == "small"
    names = [c.name for c in components(cfg)]
    assert "kafka-2" not in names and "nginx-api" not in names
    api = next(c for c in components(cfg) if c.name == "api")
    assert api.port == cfg.api_port
    assert cfg.endpoints()["KAFKA_BOOTSTRAP"] == f"127.0.0.1:{cfg.kafka_port}"


def test_ha_ports_follow_the_shifted_settings(folder: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_TOPOLOGY", "ha")
    for name, port in (("KAFKA_PORT", 9292), ("KAFKA_CONTROLLER_PORT", 9293),
                       ("KAFKA_METRICS_PORT", 9604), ("CONNECT_PORT", 8283),
                       ("CONNECT_METRICS_PORT", 9605), ("API_PORT", 8280),
                       ("FAUST_WEB_PORT", 6266)):
        monkeypatch.setenv(name, str(port))
    cfg = Config()
    ports = {c.name: c.port for c in components(cfg)}
    assert {k: v for k, v in ports.items() if k.split("-")[0] in
            ("kafka", "connect", "api", "worker") or k == "nginx-api"} == {
        "kafka": 9292, "kafka-2": 9294, "kafka-3": 9296, "connect": 8283, "connect-2": 8284,
        "api": 8281, "api-2": 8282, "nginx-api": 8280, "worker": 6266, "worker-2": 6267}
    assert cfg.kafka_nodes()[2] == (9296, 9297, 9624)
    assert cfg.connect_workers()[1] == (8284, 9615)
    # What a client reaches: the balancer's one address, every broker.
    env = cfg.endpoints()
    assert env["API_URL"] == "http://127.0.0.1:8280"
    assert Settings.from_env(env).kafka_bootstrap == "127.0.0.1:9292,127.0.0.1:9294,127.0.0.1:9296"
    assert Settings.from_env(env).broker_url.count("kafka://") == 3
    assert env["TOPIC_REPLICATION_FACTOR"] == "3"
    targets = {t["labels"]["job"]: t["targets"] for t in monitoring.scrape_targets(cfg)}
    assert targets["kafka"] == ["127.0.0.1:9604", "127.0.0.1:9614", "127.0.0.1:9624"]
    assert targets["worker"] == ["127.0.0.1:6266", "127.0.0.1:6267"]


def test_the_env_lines_survive_the_shell_with_every_broker(folder: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_TOPOLOGY", "ha")
    cfg = Config()
    exported = {}
    for line in env_lines(cfg).splitlines():
        # What `eval` in the Makefile makes of each line: one word after export.
        words = shlex.split(line)
        assert words[0] == "export" and len(words) == 2, line
        name, _, value = words[1].partition("=")
        exported[name] = value
    assert exported == cfg.endpoints()
    assert exported["BROKER_URL"].count("kafka://") == 3


def test_colliding_derived_ports_are_refused(folder: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_TOPOLOGY", "ha")
    monkeypatch.setenv("KAFKA_CONTROLLER_PORT", "9094")  # kafka node 2's broker port
    with pytest.raises(SystemExit, match="9094"):
        Config().ports()


def test_the_recorded_topology_holds_until_the_variable_says_otherwise(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "topology").write_text("ha\n")
    assert Config().topology == "ha"
    monkeypatch.setenv("STACK_TOPOLOGY", "small")
    assert Config().topology == "small"
    monkeypatch.setenv("STACK_TOPOLOGY", "huge")
    with pytest.raises(SystemExit, match="huge"):
        Config()


def test_compose_ha_scrapes_what_the_ha_topology_runs() -> None:
    small = json.loads((ROOT / "monitoring" / "targets-compose.json").read_text())
    ha = json.loads((ROOT / "monitoring" / "targets-compose-ha.json").read_text())
    assert [t["labels"] for t in ha] == [t["labels"] for t in small]
    counts = {t["labels"]["job"]: len(t["targets"]) for t in ha}
    assert counts == {"prometheus": 1, "api": 2, "worker": 2, "connect": 2, "kafka": 3,
                      "postgres": 1, "redis": 1}


def test_a_switch_empties_only_the_cluster_being_switched_to(
        folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from stack import commands

    for name in ("kafka-ha/1", "faust-ha/worker", "kafka/data", "faust/x", "pg/keep"):
        (folder / name).mkdir(parents=True)
    monkeypatch.setenv("STACK_TOPOLOGY", "ha")
    commands.start_cluster_afresh(Config())
    assert sorted(p.name for p in folder.iterdir()) == ["faust", "kafka", "pg"]
    assert "behind the replication slot" in capsys.readouterr().out
