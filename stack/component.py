"""The component base: one long-running process of the stack that starts, stops, and says
whether it is alive and healthy, with its log and pid file under the stack folder."""

from __future__ import annotations

import os
import signal
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from stack import procs
from stack.config import ROOT, Config
from stack.errors import StackError
from stack.probes import port_open, wait_until

# How long `up` waits for a component's process to answer after starting it.
STARTUP_TIMEOUT = {"kafka": 90.0, "kafka-2": 90.0, "kafka-3": 90.0, "connect": 180.0,
                   "connect-2": 180.0, "worker": 120.0, "worker-2": 120.0}
# How long `up` waits for a started (or already running) component to be healthy.
# Connect's is generous: a Connect that abandoned a task is restarted (Connect.
# restart_if_abandoned) rather than waited for, but a task may still retry the
# slot for up to slot.max.retries x slot.retry.delay.ms (60 s) after a restart.
HEALTH_TIMEOUT = {"connect": 240.0, "connect-2": 240.0}


def render(template: Path, target: Path, values: dict[str, object]) -> Path:
    """Writes `template` with its $NAMES filled in to `target` (a component's own config)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    text = string.Template(template.read_text()).substitute({k: str(v) for k, v in values.items()})
    target.write_text(text)
    return target


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
        if pid is None or not procs.alive(pid):
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
            why = "is gone" if not procs.alive(recorded) else "is now another program"
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
        return procs.alive(self.pid()) and self.ready()

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
        if procs.alive(self.pid()):
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
        if not wait_until(lambda: self.is_up() or not procs.alive(self.pid()), timeout) \
                or not self.is_up():
            state = "exited" if not procs.alive(self.pid()) else f"not ready after {timeout:.0f}s"
            raise StackError(self.name, state, log=self.log)
        return action

    def stop(self, timeout: float = 30) -> str:
        pid = self.pid()
        if not procs.alive(pid):
            self.clear_stale()
            return "not running"
        assert pid is not None
        os.killpg(pid, signal.SIGTERM) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not procs.alive(pid), timeout):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not procs.alive(pid), 10)
        self.pidfile.unlink(missing_ok=True)
        return "stopped"


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


