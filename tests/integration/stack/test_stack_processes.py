"""The stack's view of its processes: a pid file counts only for a process of ours, and a
killed parent's forked workers are cleaned up, never anybody else's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import cdc, cdc_watchdog, procs
from stack.component import Component
from testkit.ports import free_port
from testkit.waiting import wait_until

LISTEN = textwrap.dedent("""
    import os, socket, sys, time
    def listen(port):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    port, fork = int(sys.argv[1]), sys.argv[2] == "fork"
    if fork and os.fork() == 0:
        held = listen(port)   # the worker serves the port, like an API worker
    time.sleep(120)
""")


class Sleeper(Component):
    """A component whose process only listens (or not) and sleeps."""

    def __init__(self, cfg: object, port: int = 0, *, fork: bool = False) -> None:
        super().__init__("sleeper", port, cfg)
        self.fork = fork

    def command(self) -> list[str]:
        return [sys.executable, "-c", LISTEN, str(self.port), "fork" if self.fork else "-"]


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process of somebody else's: not started with our stack folder."""
    env = {k: v for k, v in os.environ.items() if k != "PAYSTREAM_STACK_DIR"}
    proc = subprocess.Popen(["sleep", "120"], env=env)
    yield proc
    proc.kill()
    proc.wait()


def test_a_pid_file_naming_somebody_elses_process_is_stale(cfg, stranger) -> None:
    comp = Sleeper(cfg)
    comp.pidfile.parent.mkdir(parents=True)
    comp.pidfile.write_text(f"{stranger.pid}\n")  # a pid reused after a kill -9
    assert comp.pid() is None
    assert comp.health() == "not running"
    assert comp.stop() == "not running"
    assert stranger.poll() is None, "stop killed a process that is not ours"
    assert not comp.pidfile.exists()


def test_a_reused_pid_is_stale_even_in_a_shell_that_exported_our_stack_folder(cfg) -> None:
    # `eval "$(make -s env)"` exports PAYSTREAM_STACK_DIR to whatever that shell runs.
    lookalike = subprocess.Popen(["sleep", "120"],
                                 env={**os.environ, "PAYSTREAM_STACK_DIR": str(cfg.dir)})
    try:
        comp = Sleeper(cfg)
        comp.pidfile.parent.mkdir(parents=True)
        started = procs.start_time(lookalike.pid)
        assert started is not None
        comp.pidfile.write_text(f"{lookalike.pid} {started}\n")
        assert comp.pid() == lookalike.pid
        # The process the pid file was written for started at another time.
        comp.pidfile.write_text(f"{lookalike.pid} {started - 1}\n")
        assert comp.pid() is None
        assert comp.stop() == "not running"
        assert lookalike.poll() is None
    finally:
        lookalike.kill()
        lookalike.wait()


# Component.launch leaves its Popen behind on purpose (the process outlives `python3 -m stack`).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_process_we_started_is_ours_and_stop_ends_it(cfg) -> None:
    comp = Sleeper(cfg)
    comp.launch()
    pid = comp.pid()
    assert pid is not None
    # A fresh object (another `python3 -m stack` run) recognises it too, by its environment.
    assert wait_until(lambda: Sleeper(cfg).pid() == pid, timeout=5)
    assert Sleeper(cfg).stop() == "stopped"
    assert not procs.alive(pid)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_killed_parents_workers_are_ended_and_others_on_the_port_are_not(cfg) -> None:
    port = free_port()
    comp = Sleeper(cfg, port, fork=True)
    comp.launch()
    parent = comp.pid()
    assert parent is not None
    wait_until(lambda: procs.listeners(port), timeout=10, what="the forked worker listening")
    [worker] = procs.listeners(port)
    env = {k: v for k, v in os.environ.items() if k != "PAYSTREAM_STACK_DIR"}
    other = subprocess.Popen([sys.executable, "-c", LISTEN, str(port), "fork"], env=env,
                             start_new_session=True)
    try:
        wait_until(lambda: len(procs.listeners(port)) == 2, timeout=10, what="a second listener")
        [foreign] = [pid for pid in procs.listeners(port) if pid != worker]
        os.kill(parent, signal.SIGKILL)
        wait_until(lambda: not procs.alive(parent), timeout=5, what="the parent gone")
        assert procs.group_orphaned(worker)

        fresh = Sleeper(cfg, port, fork=True)
        fresh.clear_stale()
        assert not procs.alive(worker), "the orphaned worker still runs"
        assert procs.alive(foreign), "a process that is not ours was ended"
        assert not fresh.pidfile.exists()
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()


def test_running_in_finds_processes_by_working_directory_and_executable(tmp_path: Path) -> None:
    sleep = Path(shutil.which("sleep") or "/bin/sleep")
    proc = subprocess.Popen([str(sleep), "120"], cwd=tmp_path)
    try:
        wait_until(lambda: proc.pid in procs.running_in(tmp_path, sleep), timeout=5,
                   what="the sleeper found")
        assert procs.running_in(tmp_path, Path(sys.executable)) == []
    finally:
        proc.kill()
        proc.wait()


def test_listeners_names_the_process_on_a_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert procs.listeners(sock.getsockname()[1]) == [os.getpid()]


def test_the_watchdog_writes_its_verdicts_and_logs_repairs(tmp_path: Path, capsys) -> None:
    conn = cdc.Connector("paystream-payments", "paystream", "debezium")

    class Repair:
        def __init__(self) -> None:
            self.conn = conn

        def __call__(self, state: object, *, kafka_up: bool) -> list[str]:
            return ["terminated pid 1 (test)"]

    state_file = tmp_path / "watchdog.json"
    cdc_watchdog.run([(lambda: cdc.State(conn, problem="primary not answering"), Repair())],
                     kafka_up=lambda: True, state_file=state_file, rounds=1)
    written = json.loads(state_file.read_text())
    assert written["cdc"] == {"paystream-payments": "primary not answering"}
    assert cdc_watchdog.fresh(state_file, 30, pid=os.getpid())
    assert not cdc_watchdog.fresh(state_file, 30, pid=os.getpid() + 1)
    log = capsys.readouterr().out
    assert "paystream-payments: primary not answering" in log
    assert "paystream-payments: terminated pid 1 (test)" in log
