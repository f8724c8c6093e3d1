"""Prometheus' config and alert rules through promtool, and the JMX agent left out when its
port is taken (a real listening socket)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from stack import monitoring
from stack.config import Config

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "monitoring"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: stack/install.sh installs Debian's prometheus"
    return subprocess.run([binary, *args], cwd=MONITORING, capture_output=True, text=True,
                          timeout=120, check=False)


def test_promtool_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_jmx_agent_is_left_out_rather_than_stop_the_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYSTREAM_CACHE_DIR", str(tmp_path))
    cfg = Config()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert monitoring.jmx_agent(cfg, port, "jmx-kafka.yml") == []  # no jar yet
        jar = tmp_path / "java" / "agents" / "jmx_prometheus_javaagent-1.0.1.jar"
        jar.parent.mkdir(parents=True)
        jar.touch()
        assert monitoring.jmx_agent(cfg, port, "jmx-kafka.yml") == [
            f"-javaagent:{jar}=127.0.0.1:{port}:{MONITORING / 'jmx-kafka.yml'}"]
        sock.listen()
        assert monitoring.jmx_agent(cfg, port, "jmx-kafka.yml") == []  # port taken
