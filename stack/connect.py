"""Kafka Connect with the Debezium plugin as a component: healthy only while CDC streams,
"paused" when a connector was paused on purpose, restarted when it abandoned a task."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from pathlib import Path

from stack import cdc, monitoring
from stack.cdc_watch import cdc_watch
from stack.component import STARTUP_TIMEOUT, Component, render
from stack.config import ROOT, Config
from stack.kafka import java, kafka_up

# What Connect logs when it gives up stopping a task (after
# task.shutdown.graceful.timeout.ms, e.g. with the broker down for longer than
# that): it cannot kill the task, whose threads go on in the JVM holding the
# replication slot and Debezium's JMX names. Debezium's next task retries each
# name 12 x 5 s (io.debezium.pipeline.JmxUtils, not configurable) before it even
# asks for the slot: ~2 minutes. Only a new JVM frees them.
ABANDONED_TASK = re.compile(rb"Graceful stop of task (\S+) failed")


class LogScan:
    """Finds a pattern's matches in a growing log, reading each byte once (logs grow large)."""

    def __init__(self, path: Path, pattern: re.Pattern[bytes]) -> None:
        self.path, self.pattern = path, pattern
        self.inode: int | None = None
        self.offset = 0
        self.found: set[str] = set()

    def __call__(self) -> set[str]:
        """The first groups matched since the file was created (a rotated log starts over)."""
        try:
            with open(self.path, "rb") as log:
                inode = os.fstat(log.fileno()).st_ino
                if inode != self.inode or os.fstat(log.fileno()).st_size < self.offset:
                    self.inode, self.offset, self.found = inode, 0, set()
                log.seek(self.offset)
                chunk = log.read()
        except OSError:
            return set()
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        self.offset += end
        self.found |= {m.group(1).decode(errors="replace")
                       for m in self.pattern.finditer(chunk[:end])}
        return set(self.found)


class Connect(Component):
    """Kafka Connect, distributed mode, with the Debezium PostgreSQL plugin."""

    def __init__(self, name: str, port: int, cfg: Config, *,
                 metrics_port: int | None = None) -> None:
        super().__init__(name, port, cfg)
        self.metrics_port = cfg.connect_metrics_port if metrics_port is None else metrics_port
        self.abandoned = LogScan(self.log, ABANDONED_TASK)

    def start(self, timeout: float) -> str:
        if self.is_up() and self.restart_if_abandoned(timeout):
            return "restarted: it had abandoned a task"
        return super().start(timeout)

    def restart_if_abandoned(self, timeout: float) -> bool:
        """Restarts a running Connect that gave up stopping a task; whether it did.

        Its log is this process's own (rotated at each launch). A crash-only
        restart: Debezium repeats what followed its last flushed offset (1 s ago).
        """
        tasks = self.abandoned()
        if not tasks or self.pid() is None:
            return False
        print(f"  connect: gave up stopping task {', '.join(sorted(tasks))} (broker down for "
              f"longer than task.shutdown.graceful.timeout.ms); its threads still hold the "
              f"slot and Debezium's JMX names: restarting Connect", flush=True)
        # Its own shutdown would wait for the abandoned task again: a short grace, then KILL.
        self.stop(timeout=5)
        super().start(timeout)
        return True

    def command(self) -> list[str]:
        props = render(ROOT / "stack" / "connect.properties",
                       self.cfg.dir / "connect" / f"{self.name}.properties",
                       {"KAFKA_BOOTSTRAP": self.cfg.kafka_bootstrap, "CONNECT_PORT": self.port,
                        "CONNECT_REPLICATION_FACTOR": min(3, len(self.cfg.kafka_nodes())),
                        "CONNECT_PLUGIN_PATH": self.cfg.cache / "java" / "plugins"})
        return java(self.cfg, "org.apache.kafka.connect.cli.ConnectDistributed", str(props),
                    heap="384m" if self.cfg.ha else "512m",
                    options=monitoring.jmx_agent(self.cfg, self.metrics_port,
                                                 "jmx-connect.yml"))

    def env(self) -> dict[str, str]:
        # Resolved by the worker's EnvVarConfigProvider in connectors/*.json.
        return {"PAYSTREAM_CDC_DB_HOST": "127.0.0.1",
                "PAYSTREAM_CDC_DB_PORT": str(self.cfg.pg_port),
                "DEBEZIUM_DB_PASSWORD": self.cfg.debezium_password}

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/connector-plugins",
                                        timeout=2) as resp:
                return b"PostgresConnector" in resp.read()
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def condition(self) -> tuple[str, str | None]:
        """Up, and every connector streams (see stack/cdc.py), or was paused on purpose.

        A connector paused or stopped through the REST API (benchmarks pause it while
        they measure; an operator may) is "paused", not DOWN: someone chose it, and
        neither `up` nor the watchdog undoes it.
        """
        reason = super().health()
        if reason is not None:
            return "DOWN", reason
        # Through this worker's own REST API: it answers for the group's connector
        # only while it is a member of the group.
        kafka = kafka_up(self.cfg)
        notes = []
        for look, _ in cdc_watch(self.cfg, connect_url=self.url):
            state = look()
            if cdc.on_purpose(state):
                notes.append(cdc.held_note(state, connect_url=self.url))
                continue
            reason = cdc.verdict(state, kafka_up=kafka)
            if reason is not None:
                return "DOWN", reason
        return ("paused", "; ".join(notes)) if notes else ("up", None)

    def health(self) -> str | None:
        word, reason = self.condition()
        return reason if word == "DOWN" else None

    def settle(self, timeout: float) -> str | None:
        """Waits until CDC streams, ending a stale slot holder or restarting a failed task."""
        deadline = time.monotonic() + timeout
        for look, repair in cdc_watch(self.cfg, connect_url=self.url):
            # A task may be abandoned while we wait (a broker back just before
            # Connect's graceful-stop timeout ran out): restart then too.
            reason = cdc.heal(look, repair, kafka_up=lambda: kafka_up(self.cfg),
                              timeout=max(0.0, deadline - time.monotonic()),
                              say=lambda message: print(f"  connect: {message}", flush=True),
                              each_round=lambda: self.restart_if_abandoned(
                                  STARTUP_TIMEOUT["connect"]))
            if reason is None:
                continue
            state = look()
            if not cdc.on_purpose(state):
                return reason
            # Paused by someone: say so, leave it paused (resuming it would spoil a
            # benchmark's measurement), and do not fail `up` for a choice.
            print(f"  connect: {cdc.held_note(state, connect_url=self.url)}; left as it is",
                  flush=True)
        return None
