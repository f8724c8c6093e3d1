"""The stack's ports, folders and local-only passwords, read from the environment when a
`Config` is made (never at import), with the defaults a lone stack on this machine uses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from stack.errors import StackError

# The checkout: every component runs from here, and the stack folder defaults to it.
ROOT = Path(__file__).resolve().parent.parent
# small: one process of each engine (the default). ha: the production shape, in
# which no single process but the Postgres primary stops payments (README.md,
# "Topologies"): 3 Kafka nodes, 2 Connect workers, 2 Faust workers, 2 API
# processes behind an NGINX HTTP balancer.
TOPOLOGIES = ("small", "ha")
# How many of each engine the ha topology runs.
HA_KAFKA_NODES, HA_CONNECT_WORKERS, HA_FAUST_WORKERS, HA_API_PROCESSES = 3, 2, 2, 2


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


def _topology() -> str:
    """STACK_TOPOLOGY, else the one `up` recorded for this stack folder, else small.

    Recorded so that `make down`, `make status` and the tests find the processes
    of an ha stack without the variable set in their own shell.
    """
    folder = Path(os.environ.get("PAYSTREAM_STACK_DIR", ROOT / ".stack")).resolve()
    raw = os.environ.get("STACK_TOPOLOGY", "")
    if not raw:
        try:
            raw = (folder / "topology").read_text().strip()
        except OSError:
            raw = "small"
    if raw not in TOPOLOGIES:
        raise SystemExit(f"STACK_TOPOLOGY={raw!r}: expected one of {', '.join(TOPOLOGIES)}")
    return raw


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
    topology: str = field(default_factory=_topology)
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

    @property
    def ha(self) -> bool:
        return self.topology == "ha"

    # The extra processes of the ha topology take ports derived from the ones
    # set above, so that a stack on shifted ports shifts them too; ports()
    # proves them distinct, and each process checks its own is free at start.
    def kafka_nodes(self) -> list[tuple[int, int, int]]:
        """(broker port, controller port, metrics port) of each Kafka node, node 1 first."""
        count = HA_KAFKA_NODES if self.ha else 1
        return [(self.kafka_port + 2 * i, self.kafka_controller_port + 2 * i,
                 self.kafka_metrics_port + 10 * i) for i in range(count)]

    def connect_workers(self) -> list[tuple[int, int]]:
        """(REST port, metrics port) of each Connect worker."""
        count = HA_CONNECT_WORKERS if self.ha else 1
        return [(self.connect_port + i, self.connect_metrics_port + 10 * i)
                for i in range(count)]

    def faust_web_ports(self) -> list[int]:
        return [self.faust_web_port + i for i in range(HA_FAUST_WORKERS if self.ha else 1)]

    def api_ports(self) -> list[int]:
        """Where the API processes listen: API_PORT itself, or in ha the ports after it
        (NGINX's HTTP balancer takes API_PORT, so clients keep one address)."""
        if not self.ha:
            return [self.api_port]
        return [self.api_port + 1 + i for i in range(HA_API_PROCESSES)]

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{broker}" for broker, _, _ in self.kafka_nodes())

    def ports(self) -> dict[int, str]:
        """Every port this stack listens on, by what takes it; exits when two collide."""
        taken: dict[int, str] = {}
        wanted = [(self.pg_port, "PG_PORT"), (self.replica1_port, "PG_REPLICA1_PORT"),
                  (self.replica2_port, "PG_REPLICA2_PORT"), (self.read_port, "PG_READ_PORT"),
                  (self.redis_port, "REDIS_PORT"), (self.stripe_port, "STRIPE_PORT"),
                  (self.api_port, "API_PORT"), (self.prometheus_port, "PROMETHEUS_PORT"),
                  (self.postgres_exporter_port, "POSTGRES_EXPORTER_PORT"),
                  (self.redis_exporter_port, "REDIS_EXPORTER_PORT")]
        for n, (broker, controller, metrics) in enumerate(self.kafka_nodes(), 1):
            wanted += [(broker, f"kafka node {n}"), (controller, f"kafka node {n} controller"),
                       (metrics, f"kafka node {n} metrics")]
        for n, (rest, metrics) in enumerate(self.connect_workers(), 1):
            wanted += [(rest, f"connect worker {n}"), (metrics, f"connect worker {n} metrics")]
        wanted += [(port, f"faust worker {n}") for n, port in enumerate(self.faust_web_ports(), 1)]
        if self.ha:
            wanted += [(port, f"api process {n}") for n, port in enumerate(self.api_ports(), 1)]
        for port, what in wanted:
            if port in taken:
                raise SystemExit(f"port {port} is wanted by both {taken[port]} and {what} "
                                 f"(the {self.topology} topology); set the port variables apart")
            taken[port] = what
        return taken

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
            "KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "BROKER_URL": ";".join(f"kafka://{b}" for b in self.kafka_bootstrap.split(",")),
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
            "FAUST_DATA_DIR": str(self.dir / ("faust-ha/worker" if self.ha else "faust")),
            "PAYSTREAM_STACK_DIR": str(self.dir),
            "STACK_TOPOLOGY": self.topology,
            # Replicated as the cluster can: Faust's topics and changelogs, the
            # topics the worker creates itself (streams/adapters/topics.py).
            "TOPIC_REPLICATION_FACTOR": str(min(3, len(self.kafka_nodes()))),
        }
