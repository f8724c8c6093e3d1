"""The stack's ports, folders and local-only passwords, read from the environment when a
`Config` is made (never at import), with the defaults a lone stack on this machine uses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from stack.errors import StackError

# The checkout: every component runs from here, and the stack folder defaults to it.
ROOT = Path(__file__).resolve().parent.parent


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"{name}={raw!r} is not a TCP port")
    return int(raw)


def _port_from(name: str, default: int) -> int:
    """A field read from the environment variable `name` when the Config is made."""
    value: int = field(default_factory=lambda: _port(name, default))
    return value


def _text_from(name: str, default: str) -> str:
    value: str = field(default_factory=lambda: os.environ.get(name, default))
    return value


def _folder_from(name: str, default: Path) -> Path:
    value: Path = field(default_factory=lambda: Path(os.environ.get(name, default)).resolve())
    return value


@dataclass(frozen=True)
class Config:
    """Ports, folders and local-only passwords, all overridable from the environment."""

    pg_port: int = _port_from("PG_PORT", 5432)
    replica1_port: int = _port_from("PG_REPLICA1_PORT", 5433)
    replica2_port: int = _port_from("PG_REPLICA2_PORT", 5434)
    read_port: int = _port_from("PG_READ_PORT", 5439)
    redis_port: int = _port_from("REDIS_PORT", 6379)
    kafka_port: int = _port_from("KAFKA_PORT", 9092)
    kafka_controller_port: int = _port_from("KAFKA_CONTROLLER_PORT", 9093)
    connect_port: int = _port_from("CONNECT_PORT", 8083)
    stripe_port: int = _port_from("STRIPE_PORT", 8420)
    api_port: int = _port_from("API_PORT", 8080)
    faust_web_port: int = _port_from("FAUST_WEB_PORT", 6066)
    prometheus_port: int = _port_from("PROMETHEUS_PORT", 9090)
    postgres_exporter_port: int = _port_from("POSTGRES_EXPORTER_PORT", 9187)
    redis_exporter_port: int = _port_from("REDIS_EXPORTER_PORT", 9121)
    # The JMX exporter agents inside the Kafka and Connect JVMs.
    kafka_metrics_port: int = _port_from("KAFKA_METRICS_PORT", 9404)
    connect_metrics_port: int = _port_from("CONNECT_METRICS_PORT", 9405)
    dir: Path = _folder_from("PAYSTREAM_STACK_DIR", ROOT / ".stack")
    cache: Path = _folder_from("PAYSTREAM_CACHE_DIR", ROOT / ".cache")
    # Local development passwords; docker-compose and production set their own.
    pg_super_password: str = _text_from("PG_SUPERUSER_PASSWORD", "postgres")
    app_password: str = _text_from("PAYSTREAM_DB_PASSWORD", "paystream")
    replication_password: str = _text_from("REPLICATION_PASSWORD", "replicator")
    debezium_password: str = _text_from("DEBEZIUM_DB_PASSWORD", "debezium")
    stripe_api_key: str = _text_from("STRIPE_API_KEY", "sk_test_paystream")
    stripe_webhook_secret: str = _text_from("STRIPE_WEBHOOK_SECRET", "whsec_paystream_local")

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def pg_bin(self) -> Path:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                          key=lambda p: int(p.parent.parent.name))
        if not versions:
            raise StackError("postgres", "no PostgreSQL under /usr/lib/postgresql; run make up")
        return versions[-1].parent

    def endpoints(self) -> dict[str, str]:
        """What a user or a script needs to reach the stack (`make env`)."""
        host = "127.0.0.1"
        db = f"postgresql://paystream:{self.app_password}@{host}"
        return {
            "DATABASE_URL": f"{db}:{self.pg_port}/paystream",
            "DATABASE_READ_URL": f"{db}:{self.read_port}/paystream",
            "DATABASE_REPLICA1_URL": f"{db}:{self.replica1_port}/paystream",
            "DATABASE_REPLICA2_URL": f"{db}:{self.replica2_port}/paystream",
            "DATABASE_ADMIN_URL":
                f"postgresql://postgres:{self.pg_super_password}@{host}:{self.pg_port}/paystream",
            "REDIS_URL": f"redis://{host}:{self.redis_port}/0",
            "KAFKA_BOOTSTRAP": f"{host}:{self.kafka_port}",
            "BROKER_URL": f"kafka://{host}:{self.kafka_port}",
            "CONNECT_URL": f"http://{host}:{self.connect_port}",
            "STRIPE_API_BASE": f"http://{host}:{self.stripe_port}",
            "STRIPE_API_KEY": self.stripe_api_key,
            "STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret,
            "API_URL": f"http://{host}:{self.api_port}",
            "API_PORT": str(self.api_port),
            "FAUST_WEB_URL": f"http://{host}:{self.faust_web_port}",
            "FAUST_WEB_PORT": str(self.faust_web_port),
            "PROMETHEUS_URL": f"http://{host}:{self.prometheus_port}",
            # The worker's RocksDB tables belong to this stack's Kafka: a second stack
            # (another PAYSTREAM_STACK_DIR) sharing them would recover foreign offsets.
            "FAUST_DATA_DIR": str(self.dir / "faust"),
            "PAYSTREAM_STACK_DIR": str(self.dir),
        }
