"""The Kafka broker as a component (one KRaft node), and the JVM command line it shares with
Kafka Connect."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

from stack import monitoring
from stack.component import Component, render
from stack.config import ROOT, Config
from stack.errors import StackError
from stack.probes import kafka_answers


def java(cfg: Config, main_class: str, *args: str, heap: str = "512m",
         options: Iterable[str] = ()) -> list[str]:
    lib = cfg.cache / "java" / "lib"
    if not lib.exists():
        raise StackError(main_class, f"{lib} is missing; run stack/install.sh (make up does)")
    return ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{ROOT / 'stack' / 'log4j.properties'}",
            *options, "-cp", f"{lib}/*", main_class, *args]


class Kafka(Component):
    """One KRaft node (broker and controller); its storage is formatted once."""

    def properties(self) -> Path:
        return render(ROOT / "stack" / "kafka.properties",
                      self.cfg.dir / "kafka" / "server.properties",
                      {"KAFKA_PORT": self.port,
                       "KAFKA_CONTROLLER_PORT": self.cfg.kafka_controller_port,
                       "KAFKA_DATA_DIR": self.cfg.dir / "kafka" / "data"})

    def prepare(self) -> None:
        props = self.properties()
        if (self.cfg.dir / "kafka" / "data" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
        subprocess.run(java(self.cfg, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                            "-c", str(props), heap="256m"),
                       check=True, stdout=subprocess.DEVNULL)

    def command(self) -> list[str]:
        return java(self.cfg, "kafka.Kafka", str(self.properties()),
                    options=monitoring.jmx_agent(self.cfg, self.cfg.kafka_metrics_port,
                                                 "jmx-kafka.yml"))

    def ready(self) -> bool:
        return kafka_answers(self.port)
