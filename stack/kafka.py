"""The Kafka nodes as components (one KRaft node, or three in the ha topology), and the JVM
command line they share with Kafka Connect."""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from stack import monitoring
from stack.component import Component, render
from stack.config import ROOT, Config
from stack.errors import StackError
from stack.probes import kafka_answers, port_open


def java(cfg: Config, main_class: str, *args: str, heap: str = "512m",
         options: Iterable[str] = ()) -> list[str]:
    lib = cfg.cache / "java" / "lib"
    if not lib.exists():
        raise StackError(main_class, f"{lib} is missing; run stack/install.sh (make up does)")
    return ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{ROOT / 'stack' / 'log4j.properties'}",
            *options, "-cp", f"{lib}/*", main_class, *args]


def kafka_up(cfg: Config) -> bool:
    """Whether the cluster serves requests: one broker answering is enough for clients,
    which find the others (and the partition leaders) through it."""
    return any(kafka_answers(broker) for broker, _, _ in cfg.kafka_nodes())


class Kafka(Component):
    """One KRaft node (broker and controller); its storage is formatted once."""

    def __init__(self, name: str, port: int, cfg: Config, *, node: int = 1) -> None:
        super().__init__(name, port, cfg)
        self.node = node
        _, self.controller_port, self.metrics_port = cfg.kafka_nodes()[node - 1]

    @property
    def data(self) -> Path:
        # The ha cluster's nodes keep their logs apart from the small stack's single
        # node: the two clusters have different quorums and cannot share storage.
        return self.cfg.dir / "kafka-ha" / str(self.node) if self.cfg.ha \
            else self.cfg.dir / "kafka" / "data"

    def properties(self) -> Path:
        values: dict[str, object] = {"KAFKA_PORT": self.port,
                                     "KAFKA_CONTROLLER_PORT": self.controller_port,
                                     "KAFKA_DATA_DIR": self.data}
        if not self.cfg.ha:
            return render(ROOT / "stack" / "kafka.properties",
                          self.cfg.dir / "kafka" / "server.properties", values)
        voters = ",".join(f"{n}@127.0.0.1:{controller}"
                          for n, (_, controller, _) in enumerate(self.cfg.kafka_nodes(), 1))
        return render(ROOT / "stack" / "kafka-ha.properties",
                      self.cfg.dir / "kafka-ha" / f"server-{self.node}.properties",
                      {**values, "KAFKA_NODE_ID": self.node, "KAFKA_QUORUM_VOTERS": voters})

    def cluster_id(self) -> str:
        """A new id for the single node; the ha nodes share one, kept beside their data."""
        fresh = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
        if not self.cfg.ha:
            return fresh
        kept = self.cfg.dir / "kafka-ha" / "cluster-id"
        if not kept.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(fresh + "\n")
        return kept.read_text().strip()

    def prepare(self) -> None:
        props = self.properties()
        if (self.data / "meta.properties").exists():
            return
        subprocess.run(java(self.cfg, "kafka.tools.StorageTool", "format", "-t",
                            self.cluster_id(), "-c", str(props), heap="256m"),
                       check=True, stdout=subprocess.DEVNULL)

    def command(self) -> list[str]:
        # Three nodes share two cores and the lead's benchmarks: a smaller heap each.
        return java(self.cfg, "kafka.Kafka", str(self.properties()),
                    heap="384m" if self.cfg.ha else "512m",
                    options=monitoring.jmx_agent(self.cfg, self.metrics_port, "jmx-kafka.yml"))

    def ready(self) -> bool:
        if not self.cfg.ha:
            return kafka_answers(self.port)
        # Started: a node of a cluster cannot serve before a majority of the quorum
        # runs, so the first one to start would never pass a broker check alone.
        return port_open(self.controller_port)

    def health(self) -> str | None:
        reason = super().health()
        if reason is None and self.cfg.ha and not kafka_answers(self.port):
            return "not serving (not in the cluster's quorum yet?)"
        return reason

    def settle(self, timeout: float) -> str | None:
        """Waits until it serves; in ha, with every running peer (a quorum of 3 needs 2, so
        the first node to start waits for nothing: the next one's settle covers it)."""
        if not self.cfg.ha:
            return super().settle(timeout)
        deadline = time.monotonic() + timeout
        while True:
            running = [broker for broker, controller, _ in self.cfg.kafka_nodes()
                       if port_open(controller)]
            if len(running) < 2:
                return None
            serving = all(kafka_answers(broker) for broker in running)
            if serving or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return self.health()
