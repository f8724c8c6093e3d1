"""docker-compose.yml is valid and runs the same components and config files as make up."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from testkit.stack import ROOT

EXPECTED_SERVICES = {
    "postgres", "db-setup", "postgres-replica1", "postgres-replica2", "nginx", "redis",
    "kafka", "connect", "connect-init", "localstripe", "api", "worker", "kafka-ui",
    "jmx-agent", "prometheus", "postgres-exporter", "redis-exporter", "grafana",
}
# The production topology's extra processes (`--profile ha`, as STACK_TOPOLOGY=ha).
HA_SERVICES = {"kafka-2", "kafka-3", "connect-2", "api-2", "nginx-api", "worker-2"}
# Files make up reads that the compose services must mount or run too.
SHARED_FILES = ["db/postgresql.conf", "db/pg_hba.conf", "db/setup.sh", "db/replica.sh",
                "nginx/nginx.conf.template", "stack/redis.conf", "connectors/payments.json",
                "stack/pom.xml", "monitoring/prometheus.yml", "monitoring/alerts.yml",
                "monitoring/jmx-kafka.yml", "monitoring/jmx-connect.yml",
                "monitoring/postgres-queries.yml", "monitoring/grafana/dashboards"]


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    # Debian's docker-compose validates without an engine; `docker compose` needs the plugin.
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: stack/install.sh installs it"
    return subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_compose_file_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_runs_every_component() -> None:
    # Debian's docker-compose 1.29 lists every profile's services here.
    result = compose("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == EXPECTED_SERVICES | HA_SERVICES
    ha = compose("--profile", "ha", "config", "-q")
    assert ha.returncode == 0, ha.stderr


def published_beyond_this_host(*args: str) -> dict[str, list[str]]:
    """The ports each service of the default profile (or of `args`' profile) publishes on
    an address other than 127.0.0.1."""
    result = compose(*args, "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    wanted = "ha" if "--profile" in args else None
    published: dict[str, list[str]] = {}
    for name, service in services.items():
        if service.get("profiles") and wanted not in service["profiles"]:
            continue
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port}"
            if not text.startswith("127.0.0.1:"):
                published.setdefault(name, []).append(text)
    return published


@pytest.mark.parametrize("path", SHARED_FILES)
def test_compose_uses_the_same_config_files(path: str) -> None:
    assert path in (ROOT / "docker-compose.yml").read_text()
    assert (ROOT / path).exists()


def test_only_the_api_is_published_beyond_this_host() -> None:
    # Postgres, Redis, Connect's REST API (no authentication), localstripe, the
    # Faust views, Prometheus and the UIs are for the operator on this host; a
    # merchant needs only the API: in ha, NGINX's balancer in front of both processes.
    published = published_beyond_this_host()
    assert set(published) == {"api"}, published
    published = published_beyond_this_host("--env-file", str(ROOT / "compose-ha.env"),
                                           "--profile", "ha")
    assert set(published) == {"nginx-api"}, published
