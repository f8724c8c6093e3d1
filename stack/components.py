"""The stack: its components in the order `up` starts them (`down` stops them in reverse),
for the topology of the stack's Config (small, or ha: see stack/config.py)."""

from __future__ import annotations

from collections.abc import Iterable

from stack import monitoring
from stack.component import Component
from stack.config import ROOT, Config
from stack.connect import Connect
from stack.kafka import Kafka
from stack.postgres import Postgres
from stack.services import LocalStripe, Nginx, NginxApi, PaystreamProcess, Redis
from stack.watchdog import Watchdog


def numbered(base: str, n: int) -> str:
    """The first of several keeps the small topology's name (tools and tests know it)."""
    return base if n == 1 else f"{base}-{n}"


def components(cfg: Config) -> list[Component]:
    cfg.ports()  # exits when two settings or derived ports collide
    primary = Postgres("postgres-primary", cfg.pg_port, cfg)
    stack: list[Component] = [
        primary,
        Postgres("postgres-replica1", cfg.replica1_port, cfg, primary=primary),
        Postgres("postgres-replica2", cfg.replica2_port, cfg, primary=primary),
        Nginx("nginx", cfg.read_port, cfg),
        Redis("redis", cfg.redis_port, cfg),
    ]
    stack += [Kafka(numbered("kafka", n), broker, cfg, node=n)
              for n, (broker, _, _) in enumerate(cfg.kafka_nodes(), 1)]
    stack += [Connect(numbered("connect", n), rest, cfg, metrics_port=metrics)
              for n, (rest, metrics) in enumerate(cfg.connect_workers(), 1)]
    stack.append(LocalStripe("localstripe", cfg.stripe_port, cfg))
    if (ROOT / "api" / "app.py").exists():
        several = len(cfg.api_ports()) > 1
        stack += [PaystreamProcess(numbered("api", n), port, cfg, args=["api"], health="/health",
                                   env={"API_PORT": str(port), "API_WORKERS": "1"}
                                   if several else None)
                  for n, port in enumerate(cfg.api_ports(), 1)]
        if cfg.ha:
            stack.append(NginxApi("nginx-api", cfg.api_port, cfg))
    if (ROOT / "streams" / "faust_app.py").exists():
        ports = cfg.faust_web_ports()
        stack += [PaystreamProcess(
            numbered("worker", n), port, cfg, args=["worker"], health="/health/",
            env={"FAUST_WEB_PORT": str(port),
                 "FAUST_DATA_DIR": str(cfg.dir / "faust-ha" / numbered("worker", n))}
            if len(ports) > 1 else None)
            for n, port in enumerate(ports, 1)]
    stack.append(Watchdog("watchdog", 0, cfg))
    return stack + monitoring.components(cfg)


def workers(stack: list[Component]) -> list[Component]:
    """The Faust workers (one, or several in ha), which the watchdog starts again."""
    return [c for c in stack if c.name == "worker" or c.name.startswith("worker-")]


def select(stack: list[Component], names: Iterable[str]) -> list[Component]:
    wanted = list(names)
    known = {c.name for c in stack}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [c for c in stack if not wanted or c.name in wanted]
