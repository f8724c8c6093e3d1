"""What `python3 -m stack ACTION` does: up, down, status, env, clean, json and watchdog."""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stack import cdc_watchdog, monitoring
from stack.after_start import AFTER_START, demo_merchant, demo_operator
from stack.cdc_watch import cdc_watch
from stack.component import HEALTH_TIMEOUT, STARTUP_TIMEOUT, Component
from stack.components import components, select, workers
from stack.config import Config
from stack.errors import StackError
from stack.kafka import kafka_up
from stack.watchdog import Watchdog, restart_if_exited


def recorded_topology(cfg: Config) -> str | None:
    try:
        return (cfg.dir / "topology").read_text().strip() or None
    except OSError:
        return None


def running(cfg: Config) -> list[str]:
    """The components of either topology that run now."""
    return [c.name for c in everything(cfg) if c.pid() is not None]


def everything(cfg: Config) -> list[Component]:
    """The components of both topologies (the ha one's names include the small one's, whose
    pid files are the same), so that `down` stops whichever runs."""
    return components(dataclasses.replace(cfg, topology="ha"))


def cluster_folders(cfg: Config) -> list[Path]:
    """What belongs to the topology's own Kafka cluster: its logs (Connect's stored
    offsets among them) and the Faust tables recovered from it."""
    if cfg.ha:
        return [cfg.dir / "kafka-ha", cfg.dir / "faust-ha"]
    return [cfg.dir / "kafka", cfg.dir / "faust"]


def start_cluster_afresh(cfg: Config) -> None:
    """Empties the Kafka cluster of the topology being switched to.

    Both clusters stream from the one replication slot: while the other ran, the
    slot moved past the offsets this cluster's Connect stored, and Debezium refuses
    to resume from a position the slot no longer has (seen switching ha, small, ha).
    Empty, the cluster has no offsets: Debezium snapshots the tables again
    (consumers are idempotent) and streams on from the slot. Postgres is the
    source of truth; nothing of the money is in these folders alone.
    """
    for folder in cluster_folders(cfg):
        if folder.exists():
            print(f"  switching to {cfg.topology}: emptying {folder} (its offsets are behind "
                  f"the replication slot)", flush=True)
            shutil.rmtree(folder)


def up(cfg: Config, names: list[str]) -> int:
    started = time.monotonic()
    recorded = recorded_topology(cfg)
    if recorded not in (None, cfg.topology) and running(cfg):
        print(f"the stack in {cfg.dir} runs the {recorded} topology "
              f"({', '.join(running(cfg))} running); `make down` first to switch to "
              f"{cfg.topology}", file=sys.stderr)
        return 1
    if recorded not in (None, cfg.topology):
        start_cluster_afresh(cfg)
    cfg.dir.mkdir(parents=True, exist_ok=True)
    (cfg.dir / "topology").write_text(cfg.topology + "\n")
    print(f"topology {cfg.topology}", flush=True)
    for comp in select(components(cfg), names):
        t0 = time.monotonic()
        try:
            action = comp.start(STARTUP_TIMEOUT.get(comp.name, 60.0))
            if comp.name in AFTER_START:
                AFTER_START[comp.name](cfg)
            # Running is not enough (a replica may not stream, CDC may be stuck): wait,
            # and repair what can be, until `status` would call it healthy.
            reason = comp.settle(HEALTH_TIMEOUT.get(comp.name, 60.0))
            if reason is not None:
                raise StackError(comp.name, f"running but not healthy: {reason}", log=comp.log)
        except (StackError, subprocess.CalledProcessError) as err:
            print(f"FAILED {comp.name}: {err}", file=sys.stderr)
            if not isinstance(err, StackError):
                print(StackError(comp.name, "see its log", log=comp.log), file=sys.stderr)
            return 1
        print(f"  {comp.name:<18} up  {comp.address():<16} {action} "
              f"({time.monotonic() - t0:.1f}s)", flush=True)
    print(f"stack up in {time.monotonic() - started:.1f}s; `make env` prints the endpoints")
    if (cfg.dir / "demo-merchant.json").exists():
        merchant = demo_merchant(cfg)
        print(f"demo merchant {merchant['id']}: API key {merchant['api_key']}\n"
              f"  try: curl -s {cfg.endpoints()['API_URL']}/v1/payments "
              f"-H 'Authorization: Bearer {merchant['api_key']}' ...  (see README.md)")
    if (cfg.dir / "demo-operator.json").exists():
        operator = demo_operator(cfg)
        print(f"operator console {cfg.endpoints()['API_URL']}/console/: "
              f"log in with {operator['operator_key']}")
    return 0


def down(cfg: Config, names: list[str]) -> int:
    # Reverse order: consumers before what they consume from.
    for comp in reversed(select(everything(cfg), names)):
        print(f"  {comp.name:<18} {comp.stop()}", flush=True)
    return 0


def status(cfg: Config) -> int:
    all_up = True
    for comp in components(cfg):
        # A connector paused on purpose prints "paused" and does not make the exit
        # non-zero: `up` accepts it too (exit 0 from one means the same as from the other).
        word, reason = comp.condition()
        all_up &= word != "DOWN"
        line = f"  {comp.name:<18} {word:<5} {comp.address()}"
        print(line if reason is None else f"{line:<43} {reason}")
    # Firing alerts are news, not a component down: they do not change the exit code.
    monitoring.print_alerts(cfg)
    return 0 if all_up else 1


def run_watchdog(cfg: Config) -> int:
    cfg.run.mkdir(parents=True, exist_ok=True)
    # Through whichever Connect worker answers this round (ha: either may be dead).
    cdc_watchdog.run(lambda: cdc_watch(cfg), kafka_up=lambda: kafka_up(cfg),
                     state_file=Watchdog("watchdog", 0, cfg).state_file,
                     also=[restart_if_exited(w) for w in workers(components(cfg))])
    return 0


def print_json(cfg: Config) -> int:
    """{name: {port, pid, up}} for scripts (tests, benches, chaos) that look at the processes."""
    print(json.dumps({c.name: {"port": c.port, "pid": c.pid(), "up": c.is_up()}
                      for c in components(cfg)}))
    return 0


def print_env(cfg: Config) -> int:
    print(env_lines(cfg))
    return 0


def env_lines(cfg: Config) -> str:
    """`export NAME=value` lines for `eval`, each value quoted for the shell: ha's
    BROKER_URL holds ';' between brokers, which unquoted would end the export after
    the first broker and run the rest as commands."""
    return "\n".join(f"export {name}={shlex.quote(value)}"
                     for name, value in cfg.endpoints().items())


def clean(cfg: Config) -> int:
    down(cfg, [])
    if cfg.dir.exists():
        shutil.rmtree(cfg.dir)
    print(f"removed {cfg.dir}")
    return 0
