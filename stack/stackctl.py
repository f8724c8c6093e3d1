"""Starts, stops and reports the local PayStream stack, one process per component.

  up [NAME...]    start what is not running (all by default), wait until each is healthy
                  (repairing CDC if needed), print addresses
  down            stop every process `up` started (by pid), keeping the data
  start NAME      start one component (and nothing else)
  stop NAME       stop one component
  status          one line per component with why it is unhealthy; exit 0 only when all are
                  healthy (replicas stream, CDC streams and advances)
  env             `export NAME=value` lines for every endpoint
  clean           down, then remove all data under the stack folder
  watchdog        check CDC every 10 s and repair it, start again a worker that exited
                  without `stop` (`up` runs this as a component)

A kill -9 leaves things behind that `up` cleans before starting again: a pid
file whose process is gone or is no longer ours (checked in /proc), forked
workers still listening on the port, a killed postmaster's orphaned backends.

Every port comes from the environment (PG_PORT, PG_REPLICA1_PORT, ...; see
`Config`). Data, logs and pid files live under PAYSTREAM_STACK_DIR (.stack/).
Standard library only, so it runs with the system python3.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import re
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "connectors"))
sys.path.insert(0, str(ROOT / "stack"))
import cdc  # noqa: E402  (stdlib-only modules beside this one)
import cdc_watchdog  # noqa: E402
import procs  # noqa: E402
import register as connectors  # noqa: E402

# stack/monitoring.py builds on this module's classes: run as a script, this module
# must be the `stackctl` it imports, not a second copy with its own StackError.
sys.modules.setdefault("stackctl", sys.modules[__name__])


class StackError(RuntimeError):
    """A component did not start or stop; carries its name and the tail of its log."""

    def __init__(self, component: str, message: str, *, log: Path | None = None) -> None:
        tail = ""
        if log is not None and log.exists():
            lines = log.read_text(errors="replace").splitlines()[-25:]
            tail = "\n".join("    " + line for line in lines)
        where = f"\n  last lines of {log}:\n{tail}" if tail else ""
        super().__init__(f"{component}: {message}{where}")
        self.component = component


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"{name}={raw!r} is not a TCP port")
    return int(raw)


@dataclass(frozen=True)
class Config:
    """Ports, folders and local-only passwords, all overridable from the environment."""

    pg_port: int = field(default_factory=lambda: _port("PG_PORT", 5432))
    replica1_port: int = field(default_factory=lambda: _port("PG_REPLICA1_PORT", 5433))
    replica2_port: int = field(default_factory=lambda: _port("PG_REPLICA2_PORT", 5434))
    read_port: int = field(default_factory=lambda: _port("PG_READ_PORT", 5439))
    redis_port: int = field(default_factory=lambda: _port("REDIS_PORT", 6379))
    kafka_port: int = field(default_factory=lambda: _port("KAFKA_PORT", 9092))
    kafka_controller_port: int = field(default_factory=lambda: _port("KAFKA_CONTROLLER_PORT", 9093))
    connect_port: int = field(default_factory=lambda: _port("CONNECT_PORT", 8083))
    stripe_port: int = field(default_factory=lambda: _port("STRIPE_PORT", 8420))
    api_port: int = field(default_factory=lambda: _port("API_PORT", 8080))
    faust_web_port: int = field(default_factory=lambda: _port("FAUST_WEB_PORT", 6066))
    prometheus_port: int = field(default_factory=lambda: _port("PROMETHEUS_PORT", 9090))
    postgres_exporter_port: int = field(
        default_factory=lambda: _port("POSTGRES_EXPORTER_PORT", 9187))
    redis_exporter_port: int = field(default_factory=lambda: _port("REDIS_EXPORTER_PORT", 9121))
    # The JMX exporter agents inside the Kafka and Connect JVMs.
    kafka_metrics_port: int = field(default_factory=lambda: _port("KAFKA_METRICS_PORT", 9404))
    connect_metrics_port: int = field(default_factory=lambda: _port("CONNECT_METRICS_PORT", 9405))
    dir: Path = field(default_factory=lambda: Path(
        os.environ.get("PAYSTREAM_STACK_DIR", ROOT / ".stack")).resolve())
    cache: Path = field(default_factory=lambda: Path(
        os.environ.get("PAYSTREAM_CACHE_DIR", ROOT / ".cache")).resolve())
    # Local development passwords; docker-compose and production set their own.
    pg_super_password: str = os.environ.get("PG_SUPERUSER_PASSWORD", "postgres")
    app_password: str = os.environ.get("PAYSTREAM_DB_PASSWORD", "paystream")
    replication_password: str = os.environ.get("REPLICATION_PASSWORD", "replicator")
    debezium_password: str = os.environ.get("DEBEZIUM_DB_PASSWORD", "debezium")
    stripe_api_key: str = os.environ.get("STRIPE_API_KEY", "sk_test_paystream")
    stripe_webhook_secret: str = os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_paystream_local")

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


# --- small process helpers ---------------------------------------------------

AS_ROOT = os.geteuid() == 0


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except OSError:
        return False


def pid_alive(pid: int | None) -> bool:
    """The process exists and has not exited (a zombie has); whose it is, Component.owns says."""
    return procs.alive(pid)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def render(template: Path, target: Path, values: dict[str, object]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    text = string.Template(template.read_text()).substitute({k: str(v) for k, v in values.items()})
    target.write_text(text)
    return target


def as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *argv] if AS_ROOT else argv


def chown_postgres(path: Path) -> None:
    if AS_ROOT:
        shutil.chown(path, "postgres", "postgres")


# --- components ----------------------------------------------------------------


@dataclass
class Component:
    """One long-running process of the stack."""

    name: str
    port: int
    cfg: Config
    # The pid this object just started: ours even before /proc shows its
    # environment (empty for a moment while exec completes).
    launched: int | None = field(default=None, init=False, repr=False)

    @property
    def log(self) -> Path:
        return self.cfg.logs / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.cfg.run / f"{self.name}.pid"

    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _pidfile_line(self) -> list[str]:
        try:
            return self.pidfile.read_text().split("\n", 1)[0].split()
        except OSError:
            return []

    def recorded_pid(self) -> int | None:
        """The pid in the pid file, whether or not that process still runs or is ours."""
        try:
            return int(self._pidfile_line()[0])
        except (ValueError, IndexError):
            return None

    def pid(self) -> int | None:
        """The pid file's process if it runs and is ours: after a kill -9 its pid may be reused."""
        pid = self.recorded_pid()
        if pid is None or not pid_alive(pid):
            return None
        if pid == self.launched:
            return pid
        # launch() notes when the process started: a reused pid started later.
        started = self._pidfile_line()[1:2]
        if started and started[0] != str(procs.start_time(pid)):
            return None
        return pid if self.owns(pid) else None

    def owns(self, pid: int) -> bool:
        """Whether `pid` is this component of this stack (launch() gives it our stack folder)."""
        return procs.has_env(pid, "PAYSTREAM_STACK_DIR", str(self.cfg.dir))

    def forked_by_us(self, pid: int) -> bool:
        """Whether `pid`, a process listening on our port, was forked by an instance of ours."""
        return self.owns(pid)

    def clear_stale(self) -> None:
        """Removes what a killed instance left: its pid file, forked workers still on the port."""
        recorded = self.recorded_pid()
        if recorded is not None and self.pid() is None:
            why = "is gone" if not pid_alive(recorded) else "is now another program"
            print(f"  {self.name}: removed stale pid file ({recorded} {why})", flush=True)
            self.pidfile.unlink(missing_ok=True)
        if not self.port:
            return
        leftovers = [pid for pid in procs.listeners(self.port)
                     if procs.group_orphaned(pid) and self.forked_by_us(pid)]
        if leftovers:
            print(f"  {self.name}: ending {len(leftovers)} orphaned process(es) still on port "
                  f"{self.port}: {', '.join(map(str, leftovers))}", flush=True)
            procs.end(leftovers)

    def ready(self) -> bool:
        return port_open(self.port)

    def is_up(self) -> bool:
        return pid_alive(self.pid()) and self.ready()

    def health(self) -> str | None:
        """None when healthy, else why not, in a few words (`make status` prints it)."""
        if self.pid() is None:
            return "not running"
        if not self.ready():
            return "not answering"
        return None

    def condition(self) -> tuple[str, str | None]:
        """What `make status` prints: ("up", None), ("DOWN", why), or another word and a
        note for a state someone chose that is not a fault (Connect: "paused")."""
        reason = self.health()
        return ("up", None) if reason is None else ("DOWN", reason)

    def settle(self, timeout: float) -> str | None:
        """Waits until healthy (after start); None then, else the last reason at the deadline."""
        reason = self.health()
        deadline = time.monotonic() + timeout
        while reason is not None and time.monotonic() < deadline:
            time.sleep(0.5)
            reason = self.health()
        return reason

    def prepare(self) -> None:
        """One-time setup before the first start (formatting, base backups)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def rotate_log(self) -> None:
        """Keep the previous run's log as .1, so readiness reads only this run's lines."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.log.exists():
            self.log.replace(self.log.with_suffix(".log.1"))

    def launch(self) -> None:
        self.rotate_log()
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True,
                                    env={**os.environ, **self.cfg_env(), **self.env()})
        self.launched = proc.pid
        started = procs.start_time(proc.pid)
        self.pidfile.write_text(f"{proc.pid} {started}\n" if started else f"{proc.pid}\n")

    def cfg_env(self) -> dict[str, str]:
        return self.cfg.endpoints()

    def start(self, timeout: float) -> str:
        if self.is_up():
            return "already running"
        if pid_alive(self.pid()):
            # Started earlier and still coming up: wait for it rather than start a twin.
            action = "was starting"
        else:
            self.clear_stale()
            if self.port and port_open(self.port):
                raise StackError(self.name, f"port {self.port} is taken by a process the stack "
                                 f"did not start; stop it or choose another port (see make env)")
            self.prepare()
            self.launch()
            action = "started"
        if not wait_until(lambda: self.is_up() or not pid_alive(self.pid()), timeout) \
                or not self.is_up():
            state = "exited" if not pid_alive(self.pid()) else f"not ready after {timeout:.0f}s"
            raise StackError(self.name, state, log=self.log)
        return action

    def stop(self, timeout: float = 30) -> str:
        pid = self.pid()
        if not pid_alive(pid):
            self.clear_stale()
            return "not running"
        assert pid is not None
        os.killpg(pid, signal.SIGTERM) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not pid_alive(pid), timeout):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), 10)
        self.pidfile.unlink(missing_ok=True)
        return "stopped"


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def clone_again(slot_wal_status: str | None, receiver: str | None) -> str | None:
    """Why a replica must be cloned from the primary again, or None.

    `slot_wal_status`: its physical slot's wal_status on the primary (None: no
    slot, or the primary did not answer); `receiver`: its pg_stat_wal_receiver
    status (None: not running or not answering). A replica more than
    max_slot_wal_keep_size behind (db/postgresql.conf) gets its slot invalidated
    at the primary's next checkpoint ("lost") and the WAL it needs removed: no
    restart makes it stream again, only a new base backup does. One that streams
    is left alone, whatever the slot says.
    """
    if receiver == "streaming" or slot_wal_status != "lost":
        return None
    return ("its slot on the primary lost the WAL it needs "
            "(more than max_slot_wal_keep_size behind)")


class Postgres(Component):
    """A PostgreSQL cluster run by pg_ctl; replicas are made from the primary once, and
    again when the primary dropped the WAL they need (clone_again)."""

    def __init__(self, name: str, port: int, cfg: Config, *, primary: Postgres | None = None):
        super().__init__(name, port, cfg)
        self.primary = primary

    @property
    def data(self) -> Path:
        return self.cfg.dir / "pg" / self.name

    @property
    def pidfile(self) -> Path:
        return self.data / "postmaster.pid"

    def ready(self) -> bool:
        probe = subprocess.run([str(self.cfg.pg_bin / "pg_isready"), "-q", "-h", "127.0.0.1",
                                "-p", str(self.port)], check=False)
        return probe.returncode == 0

    def owns(self, pid: int) -> bool:
        # The postmaster keeps the command line pg_ctl gave it, -D <data> included.
        args = procs.argv(pid)
        return any(flag == "-D" and Path(value).resolve() == self.data.resolve()
                   for flag, value in zip(args, args[1:], strict=False))

    def clear_stale(self) -> None:
        """After a kill -9 of the postmaster: end its orphaned server processes, drop its lock.

        Orphans still attached to the old shared memory make a new postmaster refuse
        to start ("pre-existing shared memory block ... is still in use", whose hint
        is to terminate any old server processes of the data directory). Every server
        process works in the data directory, so they are found by executable and
        working directory; SIGQUIT is the signal a server process exits on at once.
        The lock file goes only when nothing runs there any more: a pid in it that was
        reused by another program would make postgres refuse to start too.
        """
        executable = self.cfg.pg_bin / "postgres"
        running = procs.running_in(self.data, executable)
        postmaster = next((pid for pid in running if self.owns(pid)), None)
        if postmaster is not None:
            raise StackError(self.name, f"a postmaster (pid {postmaster}) runs in {self.data} "
                             f"but {self.pidfile.name} does not name it; stop it first")
        if running:
            print(f"  {self.name}: ending {len(running)} orphaned server process(es) of a killed "
                  f"postmaster: {', '.join(map(str, running))}", flush=True)
            procs.end(running, first=signal.SIGQUIT)
        if self.pidfile.exists() and not procs.running_in(self.data, executable):
            print(f"  {self.name}: removed stale {self.pidfile.name} "
                  f"(postmaster {self.recorded_pid()} is gone)", flush=True)
            self.pidfile.unlink()
        # The socket's lock file names the dead postmaster too; a killed postmaster
        # not yet reaped (a zombie) still "exists", so postgres would refuse to take it.
        lock = self.cfg.dir / "pg" / "sockets" / f".s.PGSQL.{self.port}.lock"
        if lock.exists() and not self.pidfile.exists():
            lock.unlink(missing_ok=True)
            print(f"  {self.name}: removed stale {lock.name}", flush=True)

    def health(self) -> str | None:
        reason = super().health()
        if reason is not None and self.primary is not None:
            # Stopped, or never coming up: a lost slot says what `up` will do about it.
            why = clone_again(self.slot_status(), None)
            return reason if why is None else f"{reason}; {why}: make up clones it again"
        if reason is not None or self.primary is None:
            return reason
        # A replica that answers may still have lost its primary: ask its WAL receiver.
        try:
            receiver = psql_admin(self.cfg, "SELECT status FROM pg_stat_wal_receiver",
                                  db="postgres", port=self.port, timeout=5).strip()
        except (subprocess.SubprocessError, OSError):
            return "not answering queries"
        if receiver != "streaming":
            why = clone_again(self.slot_status(), receiver)
            if why is not None:
                return f"{why}: make up clones it again"
            return f"not streaming from the primary (WAL receiver {receiver or 'not running'})"
        return None

    @property
    def slot(self) -> str:
        """The replica's physical replication slot on the primary."""
        return self.name.replace("-", "_")

    def slot_status(self) -> str | None:
        """The wal_status of this replica's slot on the primary; None without one or an answer."""
        try:
            return psql_admin(self.cfg, "SELECT wal_status FROM pg_replication_slots "
                              f"WHERE slot_name = '{self.slot}'", db="postgres",
                              timeout=5).strip() or None
        except (subprocess.SubprocessError, OSError):
            return None

    def receiver_status(self) -> str | None:
        if self.pid() is None:
            return None
        try:
            return psql_admin(self.cfg, "SELECT status FROM pg_stat_wal_receiver", db="postgres",
                              port=self.port, timeout=5).strip() or None
        except (subprocess.SubprocessError, OSError):
            return None

    def start(self, timeout: float) -> str:
        why = None
        if self.primary is not None and (self.data / "PG_VERSION").exists():
            why = clone_again(self.slot_status(), self.receiver_status())
        if why is None:
            return super().start(timeout)
        # What the replica holds is a copy of the primary's, useless without the
        # WAL that is gone: stop it, remove it, and base-backup it again (prepare).
        print(f"  {self.name}: {why}; cloning it again from the primary", flush=True)
        self.stop()
        shutil.rmtree(self.data)
        super().start(timeout)
        return "cloned again (its slot had lost WAL)"

    def _pg_dir(self) -> Path:
        base = self.cfg.dir / "pg"
        base.mkdir(parents=True, exist_ok=True)
        chown_postgres(base)
        return base

    def prepare(self) -> None:
        base = self._pg_dir()
        sockets = base / "sockets"
        sockets.mkdir(exist_ok=True)
        chown_postgres(sockets)
        if not (self.data / "PG_VERSION").exists():
            if self.primary is None:
                self._initdb(base)
            else:
                self._base_backup()
        # Our settings are copied in at every start so edits to db/ apply.
        for name in ("postgresql.conf", "pg_hba.conf"):
            target = self.data / ("paystream.conf" if name == "postgresql.conf" else name)
            shutil.copyfile(ROOT / "db" / name, target)
            chown_postgres(target)

    def _initdb(self, base: Path) -> None:
        pwfile = base / ".superpass"
        pwfile.write_text(self.cfg.pg_super_password + "\n")
        chown_postgres(pwfile)
        subprocess.run(as_postgres([str(self.cfg.pg_bin / "initdb"), "-D", str(self.data),
                                    "-U", "postgres", f"--pwfile={pwfile}", "-E", "UTF8",
                                    "--no-locale", "--auth-host=scram-sha-256"]),
                       check=True, stdout=subprocess.DEVNULL)
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\ninclude 'paystream.conf'\n")

    def _base_backup(self) -> None:
        assert self.primary is not None
        slot = self.slot
        conninfo = (f"host=127.0.0.1 port={self.primary.port} user=replicator "
                    f"password={self.cfg.replication_password} application_name={slot}")
        # A slot left from an earlier, removed replica would make -C fail.
        psql_admin(self.cfg, f"SELECT pg_drop_replication_slot('{slot}') FROM "
                   f"pg_replication_slots WHERE slot_name = '{slot}'", db="postgres")
        subprocess.run(as_postgres([str(self.cfg.pg_bin / "pg_basebackup"), "-d", conninfo,
                                    "-D", str(self.data), "-X", "stream", "-c", "fast",
                                    "-C", "-S", slot, "-R"]), check=True)
        # -R wrote standby.signal and a primary_conninfo; name the replica in it so
        # pg_stat_replication on the primary tells the two apart.
        with open(self.data / "postgresql.auto.conf", "a") as auto:
            auto.write(f"primary_conninfo = '{conninfo}'\nprimary_slot_name = '{slot}'\n")

    def launch(self) -> None:
        self.rotate_log()
        self.log.touch()
        chown_postgres(self.log)
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.cfg.dir / 'pg' / 'sockets'}")
        subprocess.run(as_postgres([str(self.cfg.pg_bin / "pg_ctl"), "-D", str(self.data),
                                    "-l", str(self.log), "-o", options, "-W", "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        wait_until(lambda: self.pid() is not None, 10)

    def stop(self, timeout: float = 60) -> str:
        if not pid_alive(self.pid()):
            if self.data.exists():
                self.clear_stale()
            return "not running"
        subprocess.run(as_postgres([str(self.cfg.pg_bin / "pg_ctl"), "-D", str(self.data),
                                    "-m", "fast", "-t", str(int(timeout)), "-w", "stop"]),
                       check=True, stdout=subprocess.DEVNULL)
        return "stopped"


class Nginx(Component):
    """NGINX's stream module balancing PostgreSQL reads across the replicas."""

    def conf_values(self) -> dict[str, object]:
        module = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
        return {
            "NGINX_LOAD_STREAM_MODULE": f"load_module {module};" if module.exists() else "",
            "NGINX_PID_FILE": self.pidfile,
            "NGINX_ERROR_LOG": self.log,
            "PG_REPLICA1_ADDR": f"127.0.0.1:{self.cfg.replica1_port}",
            "PG_REPLICA2_ADDR": f"127.0.0.1:{self.cfg.replica2_port}",
            "PG_READ_LISTEN": f"127.0.0.1:{self.port}",
        }

    def command(self) -> list[str]:
        conf = render(ROOT / "nginx" / "nginx.conf.template", self.cfg.dir / "nginx" / "nginx.conf",
                      self.conf_values())
        # nginx daemonises and writes its own pid file (the master's pid).
        return ["nginx", "-p", str(conf.parent), "-c", str(conf), "-e", str(self.log)]

    def launch(self) -> None:
        self.rotate_log()
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(self.command(), check=True, cwd=ROOT)
        wait_until(lambda: self.pid() is not None, 10)

    def owns(self, pid: int) -> bool:
        # nginx turns its command line (and the environment after it) into a title
        # that keeps the arguments: "nginx: master process nginx -p ... -c <conf> ...".
        return f" -c {self.cfg.dir / 'nginx' / 'nginx.conf'} " in f"{procs.title(pid)} "

    def forked_by_us(self, pid: int) -> bool:
        # Workers outlive a killed master and keep serving our port.
        return procs.title(pid).startswith("nginx: worker process")


class Redis(Component):
    def owns(self, pid: int) -> bool:
        # redis-server soon rewrites its command line into "redis-server 127.0.0.1:<port>",
        # environment included, and moves into its data folder (--dir), this stack's.
        title, data = procs.title(pid), (self.cfg.dir / "redis").resolve()
        return title.startswith("redis-server") and (
            procs.cwd(pid) == data or f" --dir {data} " in f"{title} ")

    def command(self) -> list[str]:
        data = self.cfg.dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        return ["redis-server", str(ROOT / "stack" / "redis.conf"), "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(data), "--daemonize", "no"]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


import monitoring  # noqa: E402  (needs Component and Config above)


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

    def __init__(self, name: str, port: int, cfg: Config) -> None:
        super().__init__(name, port, cfg)
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
                       self.cfg.dir / "connect" / "connect.properties",
                       {"KAFKA_PORT": self.cfg.kafka_port, "CONNECT_PORT": self.port,
                        "CONNECT_PLUGIN_PATH": self.cfg.cache / "java" / "plugins"})
        return java(self.cfg, "org.apache.kafka.connect.cli.ConnectDistributed", str(props),
                    options=monitoring.jmx_agent(self.cfg, self.cfg.connect_metrics_port,
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
        kafka_up = kafka_answers(self.cfg.kafka_port)
        notes = []
        for look, _ in cdc_watch(self.cfg):
            state = look()
            if cdc.on_purpose(state):
                notes.append(cdc.held_note(state, connect_url=self.url))
                continue
            reason = cdc.verdict(state, kafka_up=kafka_up)
            if reason is not None:
                return "DOWN", reason
        return ("paused", "; ".join(notes)) if notes else ("up", None)

    def health(self) -> str | None:
        word, reason = self.condition()
        return reason if word == "DOWN" else None

    def settle(self, timeout: float) -> str | None:
        """Waits until CDC streams, ending a stale slot holder or restarting a failed task."""
        deadline = time.monotonic() + timeout
        for look, repair in cdc_watch(self.cfg):
            # A task may be abandoned while we wait (a broker back just before
            # Connect's graceful-stop timeout ran out): restart then too.
            reason = cdc.heal(look, repair, kafka_up=lambda: kafka_answers(self.cfg.kafka_port),
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


class Watchdog(Component):
    """The CDC watchdog (stack/cdc_watchdog.py), a process of its own like the others; it
    also starts again a worker that exited without being stopped (restart_if_exited)."""

    @property
    def state_file(self) -> Path:
        return self.cfg.run / "watchdog.json"

    def address(self) -> str:
        return f"every {cdc_watchdog.INTERVAL_S:.0f}s"

    def command(self) -> list[str]:
        return [sys.executable, str(ROOT / "stack" / "stackctl.py"), "watchdog"]

    def ready(self) -> bool:
        # Its state file is rewritten every round; one that stopped changing is a stuck watchdog.
        return cdc_watchdog.fresh(self.state_file, 3 * cdc_watchdog.INTERVAL_S, pid=self.pid())


class LocalStripe(Component):
    """localstripe, the Stripe peer, with its state in this stack's folder.

    Run through stack/localstripe_launcher.py: plain localstripe rewrites its
    store on every write (to a path shared by every checkout on the machine)
    and cannot load it back past ~1,000 objects; the launcher checkpoints this
    stack's own file at most once a second, atomically, and at exit, and logs
    every change durably before answering (so a kill -9 loses nothing answered).
    """

    @property
    def store(self) -> Path:
        return self.cfg.dir / "localstripe" / "store.pickle"

    def command(self) -> list[str]:
        self.store.parent.mkdir(parents=True, exist_ok=True)
        return [str(ROOT / ".venv" / "bin" / "python"),
                str(ROOT / "stack" / "localstripe_launcher.py"),
                "--port", str(self.port), "--store", str(self.store)]

    def start(self, timeout: float) -> str:
        try:
            return super().start(timeout)
        except StackError:
            # A store that cannot be read (the launcher never leaves one
            # truncated, but a full disk could): keep it for a look, start empty.
            if "UnpicklingError" not in self.log.read_text(errors="replace"):
                raise
            self.store.replace(self.store.with_suffix(".pickle.corrupt"))
            print(f"  localstripe: {self.store} was unreadable; moved to *.corrupt, "
                  "starting empty")
            return super().start(timeout)

    def ready(self) -> bool:
        # Without a key localstripe answers 401 before touching its store: listing
        # took over 2 s with ~20,000 objects. One thread serves everything, so a
        # busy peer answers late, not never: allow for that before calling it down.
        return http_ok(f"http://127.0.0.1:{self.port}/v1/customers/cus_health", timeout=5.0)


class PaystreamProcess(Component):
    """Our own API or worker, run from .venv through the paystream console script."""

    def __init__(self, name: str, port: int, cfg: Config, *, args: list[str], health: str):
        super().__init__(name, port, cfg)
        self.args = args
        self.health_path = health

    def command(self) -> list[str]:
        return [str(ROOT / ".venv" / "bin" / "paystream"), *self.args]

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}{self.health_path}")


def kafka_answers(port: int) -> bool:
    """True when the broker answers an ApiVersions request (v0) without an error.

    An open port is not enough: the socket server listens before the broker
    has joined its own KRaft quorum and can serve requests.
    """
    client = b"stackctl"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = sock.recv(10)
    except OSError:
        return False
    if len(header) < 10:
        return False
    _size, correlation, error = struct.unpack(">iih", header)
    return correlation == 1 and error == 0


# --- the stack --------------------------------------------------------------------


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
    if (ROOT / "streams" / "app.py").exists():
        stack.append(PaystreamProcess("worker", cfg.faust_web_port, cfg, args=["worker"],
                                      health="/health/"))
    stack.append(Watchdog("watchdog", 0, cfg))
    return stack + monitoring.components(cfg)


STARTUP_TIMEOUT = {"kafka": 90.0, "connect": 180.0, "worker": 120.0}
# How long `up` waits for a started (or already running) component to be healthy.
# Connect's is generous: a Connect that abandoned a task is restarted (Connect.
# restart_if_abandoned) rather than waited for, but a task may still retry the
# slot for up to slot.max.retries x slot.retry.delay.ms (60 s) after a restart.
HEALTH_TIMEOUT = {"connect": 240.0}


def psql_admin(cfg: Config, sql: str, *, db: str = "paystream", port: int | None = None,
               timeout: float | None = None) -> str:
    """Runs `sql` as the superuser on the primary (or the server on `port`); returns its output."""
    out = subprocess.run([str(cfg.pg_bin / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                          "-h", "127.0.0.1", "-p", str(port or cfg.pg_port), "-U", "postgres",
                          "-d", db, "-c", sql], check=True, capture_output=True, text=True,
                         timeout=timeout,
                         env={**os.environ, "PGPASSWORD": cfg.pg_super_password,
                              "PGCONNECT_TIMEOUT": "3"})
    return out.stdout


def primary_sql(cfg: Config) -> Callable[[str], str]:
    """psql_admin for stack/cdc.py, which wants a RuntimeError when the primary does not answer."""
    def run(sql: str) -> str:
        try:
            return psql_admin(cfg, sql, timeout=10)
        except subprocess.CalledProcessError as err:
            raise RuntimeError(err.stderr.strip() or f"psql exited {err.returncode}") from err
        except subprocess.TimeoutExpired as err:
            raise RuntimeError("psql timed out") from err
    return run


def cdc_connectors() -> list[cdc.Connector]:
    """The Debezium connectors of connectors/*.json and the slot and user each streams with."""
    found = []
    for path in sorted((ROOT / "connectors").glob("*.json")):
        config = json.loads(path.read_text())
        if "database.user" in config:
            found.append(cdc.Connector(connectors.connector_name(path),
                                       config.get("slot.name", "debezium"),
                                       config["database.user"]))
    return found


def cdc_watch(cfg: Config) -> list[tuple[Callable[[], cdc.State], cdc.Repairer]]:
    """For each connector, a way to look at its CDC and a repairer."""
    url, sql = f"http://127.0.0.1:{cfg.connect_port}", primary_sql(cfg)
    return [(functools.partial(cdc.read, conn, connect_url=url, sql=sql),
             cdc.Repairer(conn, connect_url=url, sql=sql)) for conn in cdc_connectors()]


def setup_database(cfg: Config) -> None:
    """Roles, database and migrations on the primary (db/setup.sh, also used by compose)."""
    result = subprocess.run(["bash", str(ROOT / "db" / "setup.sh")], capture_output=True, text=True,
                            env={**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(cfg.pg_port),
                                 "PGSUPERPASSWORD": cfg.pg_super_password,
                                 "PAYSTREAM_DB_PASSWORD": cfg.app_password,
                                 "REPLICATION_PASSWORD": cfg.replication_password,
                                 "DEBEZIUM_DB_PASSWORD": cfg.debezium_password,
                                 "PATH": f"{cfg.pg_bin}:{os.environ['PATH']}"})
    for line in result.stdout.splitlines():
        print(f"  {line}")
    if result.returncode != 0:
        raise StackError("migrations", result.stderr.strip() or "db/setup.sh failed")


def register_connectors(cfg: Config) -> list[str]:
    url = f"http://127.0.0.1:{cfg.connect_port}"
    try:
        return [connectors.register(url, path, timeout=120, restart_failed=True)
                for path in sorted((ROOT / "connectors").glob("*.json"))]
    except connectors.RegistrationError as err:
        raise StackError("connect", str(err), log=cfg.logs / "connect.log") from err


def register_stripe_webhook(cfg: Config) -> None:
    """Points localstripe's webhooks at our API, so Stripe events flow locally too."""
    form = urllib.parse.urlencode({
        "url": f"http://127.0.0.1:{cfg.api_port}/v1/webhooks/stripe",
        "secret": cfg.stripe_webhook_secret,
    }).encode()
    url = f"http://127.0.0.1:{cfg.stripe_port}/_config/webhooks/paystream"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=10):
            pass
    except OSError as err:
        raise StackError("localstripe", f"webhook registration failed: {err}") from err


def demo_merchant(cfg: Config) -> dict[str, str]:
    """The merchant `make up` prints a key for; created once, remembered in the stack folder."""
    saved = cfg.dir / "demo-merchant.json"
    if not saved.exists():
        made = subprocess.run([str(ROOT / ".venv" / "bin" / "paystream"), "merchant", "create",
                               "Demo Merchant"], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, **cfg.endpoints()})
        if made.returncode != 0:
            raise StackError("api", f"creating the demo merchant failed: {made.stderr.strip()}")
        saved.write_text(made.stdout)
        saved.chmod(0o600)
    return json.loads(saved.read_text())


def after_api(cfg: Config) -> None:
    register_stripe_webhook(cfg)
    demo_merchant(cfg)


# Steps that follow a component's start, each safe to repeat.
AFTER_START: dict[str, Callable[[Config], object]] = {
    "postgres-primary": setup_database,
    "connect": register_connectors,
    # localstripe keeps its webhook endpoints in memory only: a restarted one
    # must be told again where to send events.
    "localstripe": register_stripe_webhook,
    "api": after_api,
}


def select(stack: list[Component], names: Iterable[str]) -> list[Component]:
    wanted = list(names)
    known = {c.name for c in stack}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [c for c in stack if not wanted or c.name in wanted]


def up(cfg: Config, names: list[str]) -> int:
    started = time.monotonic()
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
    return 0


def down(cfg: Config, names: list[str]) -> int:
    # Reverse order: consumers before what they consume from.
    for comp in reversed(select(components(cfg), names)):
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


def restart_if_exited(comp: Component, *, confirm_after: float = 2.0,
                      ) -> Callable[[bool], list[str]]:
    """A watchdog check that starts `comp` again when it exited without being stopped.

    `stop` removes the pid file, so a component stopped on purpose (`stackctl stop
    worker`, as benches and tests do) stays stopped; a pid file whose process is
    gone means it crashed, was killed, or ended itself to be restarted (the worker
    past a deadline or its stall watchdog). Seen twice, `confirm_after` apart: a
    stop in progress removes its pid file right after the process exits. Not while
    Kafka is down: the worker would only exit again.
    """
    def check(kafka_up: bool) -> list[str]:
        gone = comp.recorded_pid()
        if gone is None or comp.pid() is not None or not kafka_up:
            return []
        time.sleep(confirm_after)
        if comp.recorded_pid() != gone or comp.pid() is not None:
            return []
        comp.clear_stale()
        comp.launch()
        return [f"{comp.name}: pid {gone} had exited without a stop; started again "
                f"(pid {comp.launched})"]
    return check


def run_watchdog(cfg: Config) -> int:
    cfg.run.mkdir(parents=True, exist_ok=True)
    workers = [c for c in components(cfg) if c.name == "worker"]
    cdc_watchdog.run(cdc_watch(cfg), kafka_up=lambda: kafka_answers(cfg.kafka_port),
                     state_file=Watchdog("watchdog", 0, cfg).state_file,
                     also=[restart_if_exited(w) for w in workers])
    return 0


def print_env(cfg: Config) -> int:
    for name, value in cfg.endpoints().items():
        print(f"export {name}={value}")
    return 0


def clean(cfg: Config) -> int:
    down(cfg, [])
    if cfg.dir.exists():
        shutil.rmtree(cfg.dir)
    print(f"removed {cfg.dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stackctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "start", "stop", "status", "env", "clean",
                                           "json", "watchdog"])
    parser.add_argument("names", nargs="*", help="component names (default: all)")
    args = parser.parse_args(argv)
    cfg = Config()
    if args.action in ("up", "start"):
        return up(cfg, args.names)
    if args.action in ("down", "stop"):
        return down(cfg, args.names)
    if args.action == "status":
        return status(cfg)
    if args.action == "json":
        print(json.dumps({c.name: {"port": c.port, "pid": c.pid(), "up": c.is_up()}
                          for c in components(cfg)}))
        return 0
    if args.action == "env":
        return print_env(cfg)
    if args.action == "watchdog":
        return run_watchdog(cfg)
    return clean(cfg)


if __name__ == "__main__":
    sys.exit(main())
