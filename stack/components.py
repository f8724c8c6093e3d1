"""The stack: its components in the order `up` starts them (`down` stops them in reverse)."""

from __future__ import annotations

from collections.abc import Iterable

from stack import monitoring
from stack.component import Component
from stack.config import ROOT, Config
from stack.connect import Connect
from stack.kafka import Kafka
from stack.postgres import Postgres
from stack.services import LocalStripe, Nginx, PaystreamProcess, Redis
from stack.watchdog import Watchdog


def components(cfg: Config) -> list[Component]:
    primary = Postgres("postgres-primary", cfg.pg_port, cfg)
    stack: list[Component] = [
        primary,
        Postgres("postgres-replica1", cfg.replica1_port, cfg, primary=primary),
        Postgres("postgres-replica2", cfg.replica2_port, cfg, primary=primary),
        Nginx("nginx", cfg.read_port, cfg),
        Redis("redis", cfg.redis_port, cfg),
        Kafka("kafka", cfg.kafka_port, cfg),
        Connect("connect", cfg.connect_port, cfg),
        LocalStripe("localstripe", cfg.stripe_port, cfg),
    ]
    if (ROOT / "api" / "app.py").exists():
        stack.append(PaystreamProcess("api", cfg.api_port, cfg, args=["api"], health="/health"))
    if (ROOT / "streams" / "faust_app.py").exists():
        stack.append(PaystreamProcess("worker", cfg.faust_web_port, cfg, args=["worker"],
                                      health="/health/"))
    stack.append(Watchdog("watchdog", 0, cfg))
    return stack + monitoring.components(cfg)


def select(stack: list[Component], names: Iterable[str]) -> list[Component]:
    wanted = list(names)
    known = {c.name for c in stack}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [c for c in stack if not wanted or c.name in wanted]
