"""Prometheus and its exporters as components of the local stack, and the alerts `status` shows."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

from stack.component import Component
from stack.config import ROOT, Config
from stack.probes import http_ok, port_open

# Configs shared with docker-compose.yml: scrape config, alert rules, exporter rules.
MONITORING = ROOT / "monitoring"


def scrape_targets(cfg: Config) -> list[dict[str, Any]]:
    """Prometheus file_sd target groups: where each component serves /metrics here."""
    # Each process of a job its own target (ha runs several): one that is down
    # shows as up == 0 for its instance while the job goes on.
    jobs = {
        "prometheus": [cfg.prometheus_port],
        "api": cfg.api_ports(),
        "worker": cfg.faust_web_ports(),
        "connect": [metrics for _, metrics in cfg.connect_workers()],
        "kafka": [metrics for _, _, metrics in cfg.kafka_nodes()],
        "postgres": [cfg.postgres_exporter_port],
        "redis": [cfg.redis_exporter_port],
    }
    return [{"targets": [f"127.0.0.1:{port}" for port in ports], "labels": {"job": job}}
            for job, ports in jobs.items()]


class Prometheus(Component):
    """Prometheus scraping every component, evaluating monitoring/alerts.yml."""

    @property
    def home(self) -> Path:
        return self.cfg.dir / "prometheus"

    def prepare(self) -> None:
        # Copied at every start so that edits to monitoring/ apply; the targets
        # carry this stack's ports (compose mounts its own).
        (self.home / "targets").mkdir(parents=True, exist_ok=True)
        for name in ("prometheus.yml", "alerts.yml"):
            shutil.copyfile(MONITORING / name, self.home / name)
        (self.home / "targets" / "paystream.json").write_text(
            json.dumps(scrape_targets(self.cfg), indent=2) + "\n")

    def command(self) -> list[str]:
        return ["prometheus", f"--config.file={self.home / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.home / 'data'}",
                "--storage.tsdb.retention.time=3d",
                f"--web.listen-address=127.0.0.1:{self.port}"]

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/-/ready")


class PostgresExporter(Component):
    """prometheus-postgres-exporter on the primary, with monitoring/postgres-queries.yml."""

    def command(self) -> list[str]:
        return ["prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{self.port}",
                f"--extend.query-path={MONITORING / 'postgres-queries.yml'}",
                "--disable-settings-metrics", "--log.level=warn"]

    def env(self) -> dict[str, str]:
        # The superuser: pg_stat_replication hides its state from roles that are
        # neither superuser nor pg_monitor. Local passwords only, like the rest.
        return {"DATA_SOURCE_NAME": f"postgresql://postgres:{self.cfg.pg_super_password}"
                                    f"@127.0.0.1:{self.cfg.pg_port}/paystream?sslmode=disable"}

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/")


class RedisExporter(Component):
    """prometheus-redis-exporter: memory, clients, commands of the stack's Redis."""

    def command(self) -> list[str]:
        return ["prometheus-redis-exporter", f"-web.listen-address=127.0.0.1:{self.port}",
                f"-redis.addr=redis://127.0.0.1:{self.cfg.redis_port}"]

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/")


def components(cfg: Config) -> list[Component]:
    """Started after everything they watch, stopped before it."""
    return [
        PostgresExporter("postgres-exporter", cfg.postgres_exporter_port, cfg),
        RedisExporter("redis-exporter", cfg.redis_exporter_port, cfg),
        Prometheus("prometheus", cfg.prometheus_port, cfg),
    ]


def jmx_agent(cfg: Config, port: int, rules: str) -> list[str]:
    """JVM options that serve a JVM's MBeans as Prometheus metrics on `port`."""
    # Either way the JVM starts without metrics (Prometheus then reports the target
    # down): an agent that cannot bind aborts the JVM, and the broker matters more.
    agents = cfg.cache / "java" / "agents"
    jars = sorted(agents.glob("jmx_prometheus_javaagent-*.jar"))
    if not jars:
        print(f"  warning: no JMX exporter agent in {agents}; starting without metrics "
              "(stack/install.sh fetches it; make up runs it)", flush=True)
        return []
    if port_open(port):
        print(f"  warning: metrics port {port} is taken; starting without the JMX exporter "
              "(set KAFKA_METRICS_PORT / CONNECT_METRICS_PORT)", flush=True)
        return []
    return [f"-javaagent:{jars[-1]}=127.0.0.1:{port}:{MONITORING / rules}"]


def firing_alerts(cfg: Config) -> list[dict[str, Any]] | None:
    """Alerts firing now, from Prometheus' HTTP API; None when it does not answer."""
    url = f"http://127.0.0.1:{cfg.prometheus_port}/api/v1/alerts"
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            alerts = json.load(resp)["data"]["alerts"]
    except (OSError, ValueError, KeyError):
        return None
    return [a for a in alerts if a.get("state") == "firing"]


def print_alerts(cfg: Config) -> None:
    """The lines `status` prints under the components."""
    alerts = firing_alerts(cfg)
    if alerts is None:
        return
    if not alerts:
        print("  alerts: none firing")
        return
    print(f"  alerts: {len(alerts)} firing")
    for alert in sorted(alerts, key=lambda a: (a["labels"].get("severity") != "page",
                                               a["labels"].get("alertname", ""))):
        labels, summary = alert["labels"], alert.get("annotations", {}).get("summary", "")
        print(f"    {labels.get('severity', '?'):<8} {labels.get('alertname', '?'):<28} {summary}")
