"""`make up` never needs a person for what it can see (issue 19, item 4), with fakes:

- a connector paused on purpose is "paused" in `status` (exit 0), and `up` neither fails
  on it nor resumes it;
- a replica whose slot the primary invalidated (past max_slot_wal_keep_size) is cloned again;
- a Connect that abandoned a task (broker down for minutes) is restarted, so the next task
  does not wait 2 x 55 s for the JMX names the abandoned one holds.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from connectors import register
from stack import cdc
from stack.commands import status
from stack.component import Component
from stack.connect import ABANDONED_TASK, Connect, LogScan
from stack.postgres import Postgres, clone_again

CONN = cdc.Connector("paystream-payments", "paystream", "debezium")
NOW = 1_000_000.0
TASK = cdc.Walsender(pid=100, app="Debezium Streaming", started=NOW - 600, write_lsn=5000)
STREAMING = cdc.State(CONN, now=NOW, connector_state="RUNNING", tasks=(cdc.Task(0, "RUNNING"),),
                      slot_exists=True, active_pid=TASK.pid, confirmed=5000,
                      wal_status="reserved", walsenders=(TASK,), last_beat=NOW - 4)
PAUSED = replace(STREAMING, connector_state="PAUSED", tasks=(cdc.Task(0, "PAUSED"),),
                 last_beat=NOW - 400)
STOPPED = replace(STREAMING, connector_state="STOPPED", tasks=(), active_pid=None)


# --- (c) a connector paused on purpose ------------------------------------------------


def test_paused_or_stopped_through_rest_is_on_purpose_and_says_how_to_resume() -> None:
    assert cdc.on_purpose(PAUSED) and cdc.on_purpose(STOPPED)
    assert not cdc.on_purpose(STREAMING)
    assert not cdc.on_purpose(replace(STREAMING, connector_state="FAILED"))
    assert not cdc.on_purpose(replace(PAUSED, problem="primary not answering (x)"))
    assert cdc.held_note(PAUSED, connect_url="http://127.0.0.1:8083") == (
        "connector paystream-payments paused on purpose "
        "(resume: curl -X PUT http://127.0.0.1:8083/connectors/paystream-payments/resume)")


def connect_looking_at(cfg: Any, monkeypatch: pytest.MonkeyPatch, *states: Any) -> Any:
    """A Connect whose process answers and whose connectors look like `states`."""
    monkeypatch.setattr(Component, "health", lambda self: None)
    monkeypatch.setattr("stack.connect.kafka_up", lambda cfg: True)
    monkeypatch.setattr("stack.connect.cdc_watch",
                        lambda cfg, connect_url=None: [(lambda s=s: s, None) for s in states])
    return Connect("connect", 8083, cfg, metrics_port=9405)


def test_a_paused_connector_is_shown_paused_not_down(cfg: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    connect = connect_looking_at(cfg, monkeypatch, PAUSED)
    word, note = connect.condition()
    assert word == "paused"
    assert note is not None and note.startswith("connector paystream-payments paused on purpose")
    assert connect.health() is None  # `up` does not fail on it
    # Streaming, or not streaming for a reason nobody chose, is what it was.
    assert connect_looking_at(cfg, monkeypatch, STREAMING).condition() == ("up", None)
    failed = replace(STREAMING, connector_state="FAILED")
    assert connect_looking_at(cfg, monkeypatch, PAUSED, failed).condition() == (
        "DOWN", "connector paystream-payments FAILED")


class FakeComponent:
    def __init__(self, name: str, word: str, reason: str | None = None) -> None:
        self.name, self.word, self.reason = name, word, reason

    def condition(self) -> tuple[str, str | None]:
        return self.word, self.reason

    def address(self) -> str:
        return "127.0.0.1:1"


def test_status_prints_paused_and_exits_0_for_it(cfg: Any, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("stack.monitoring.print_alerts", lambda cfg: None)
    stack = [FakeComponent("kafka", "up"), FakeComponent("connect", "paused", "connector x ...")]
    monkeypatch.setattr("stack.commands.components", lambda cfg: stack)
    assert status(cfg) == 0
    out = capsys.readouterr().out
    assert re.search(r"connect\s+paused 127\.0\.0\.1:1\s+connector x \.\.\.", out)
    assert "DOWN" not in out
    stack.append(FakeComponent("worker", "DOWN", "not running"))
    assert status(cfg) == 1


def test_up_leaves_a_paused_connector_paused_and_succeeds(
        cfg: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    connect = connect_looking_at(cfg, monkeypatch, PAUSED)
    repair = cdc.Repairer(CONN, connect_url="http://x", sql=lambda sql: "0/1388\n")
    monkeypatch.setattr("stack.connect.cdc_watch",
                        lambda cfg, connect_url=None: [(lambda: PAUSED, repair)])
    posted: list[str] = []
    monkeypatch.setattr(cdc, "_rest", lambda method, url, timeout=3.0: posted.append(url))
    assert connect.settle(5) is None
    assert posted == [], "nothing was resumed or restarted"
    assert "paused on purpose" in capsys.readouterr().out
    # A connector that is down for a reason nobody chose still fails `up`.
    failed = replace(STREAMING, connector_state="UNASSIGNED")
    monkeypatch.setattr("stack.connect.cdc_watch",
                        lambda cfg, connect_url=None: [(lambda: failed, repair)])
    assert connect.settle(0) == "connector paystream-payments UNASSIGNED"


@pytest.mark.parametrize("state", ["PAUSED", "STOPPED"])
def test_registration_accepts_a_connector_paused_on_purpose(
        monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    config = {"connector.class": "x"}
    calls: list[tuple[str, str]] = []

    def fake(method: str, url: str, body: dict | None = None) -> tuple[int, object]:
        calls.append((method, url))
        if url.endswith("/config"):
            return 200, {**config, "name": "c"}
        if url.endswith("/status"):
            return 200, {"connector": {"state": state}, "tasks": []}
        return 200, []

    monkeypatch.setattr(register, "_request", fake)
    assert register.register_config("http://x", "c", config, timeout=1) == "c"
    assert all(method == "GET" for method, _ in calls), "no PUT, no resume"


# --- (b) a replica past max_slot_wal_keep_size --------------------------------------


@pytest.mark.parametrize(("slot", "receiver", "clone"), [
    ("lost", None, True),          # stopped replica, slot invalidated
    ("lost", "starting", True),    # running, cannot stream
    ("lost", "streaming", False),  # streams: leave it, whatever the slot says
    ("unreserved", None, False),   # past the limit, WAL not removed yet: it can catch up
    ("reserved", None, False),
    ("extended", "waiting", False),
    (None, None, False),           # no slot, or the primary did not answer
])
def test_a_replica_is_cloned_again_only_when_its_slot_lost_wal(
        slot: str | None, receiver: str | None, clone: bool) -> None:
    assert (clone_again(slot, receiver) is not None) is clone


def replica(cfg: Any, monkeypatch: pytest.MonkeyPatch, *, slot: str | None,
            receiver: str | None) -> tuple[Any, list[str]]:
    primary = Postgres("postgres-primary", 5432, cfg)
    rep = Postgres("postgres-replica1", 5433, cfg, primary=primary)
    rep.data.mkdir(parents=True)
    (rep.data / "PG_VERSION").write_text("15\n")
    done: list[str] = []
    monkeypatch.setattr(rep, "slot_status", lambda: slot)
    monkeypatch.setattr(rep, "receiver_status", lambda: receiver)
    monkeypatch.setattr(rep, "stop", lambda timeout=60: done.append("stop") or "stopped")
    monkeypatch.setattr(Component, "start", lambda self, timeout: done.append(
        f"start (data {'kept' if self.data.exists() else 'removed'})") or "already running")
    return rep, done


def test_up_clones_a_replica_whose_slot_lost_wal(cfg: Any, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rep, done = replica(cfg, monkeypatch, slot="lost", receiver="starting")
    assert rep.start(10) == "cloned again (its slot had lost WAL)"
    assert done == ["stop", "start (data removed)"]
    assert "cloning it again from the primary" in capsys.readouterr().out


def test_up_leaves_a_replica_that_can_catch_up(cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rep, done = replica(cfg, monkeypatch, slot="unreserved", receiver=None)
    assert rep.start(10) == "already running"
    assert done == ["start (data kept)"]


def test_status_names_the_lost_slot(cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rep, _ = replica(cfg, monkeypatch, slot="lost", receiver=None)
    monkeypatch.setattr(Component, "health", lambda self: None)
    monkeypatch.setattr("stack.postgres.psql_admin", lambda *a, **k: "starting\n")
    reason = rep.health()
    assert reason is not None and "lost the WAL" in reason and "make up clones it" in reason


# --- (a) a Connect that abandoned a task -------------------------------------------------


def test_the_log_scan_reads_each_line_once_and_starts_over_on_a_new_log(tmp_path: Path) -> None:
    log = tmp_path / "connect.log"
    log.write_bytes(b"[x] INFO fine\n[x] ERROR Graceful stop of task paystream-pay")
    scan = LogScan(log, ABANDONED_TASK)
    assert scan() == set()  # a line still being written
    with open(log, "ab") as out:
        out.write(b"ments-0 failed. (org.apache.kafka.connect.runtime.Worker)\n")
    assert scan() == {"paystream-payments-0"}
    assert scan() == {"paystream-payments-0"}  # remembered, not re-read
    rotated = tmp_path / "new.log"
    rotated.write_bytes(b"[y] INFO started\n")
    rotated.replace(log)  # launch() rotates the log: a new process, nothing abandoned
    assert scan() == set()
    log.unlink()
    assert scan() == set()


def test_connect_is_restarted_when_it_abandoned_a_task(cfg: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    connect = Connect("connect", 8083, cfg)
    done: list[str] = []
    monkeypatch.setattr(connect, "pid", lambda: 4321)
    monkeypatch.setattr(connect, "is_up", lambda: True)
    monkeypatch.setattr(connect, "stop", lambda timeout=30: done.append(f"stop {timeout}"))
    monkeypatch.setattr(Component, "start",
                        lambda self, timeout: done.append("start") or "started")
    connect.log.parent.mkdir(parents=True)
    connect.log.write_bytes(b"[x] INFO all well\n")
    assert connect.start(10) == "started"
    assert done == ["start"]
    done.clear()
    with open(connect.log, "ab") as out:
        out.write(b"[x] ERROR Graceful stop of task paystream-payments-0 failed. (Worker)\n")
    assert connect.start(10) == "restarted: it had abandoned a task"
    assert done == ["stop 5", "start"]


def test_heal_runs_each_round_before_each_look() -> None:
    looks = iter([replace(STREAMING, confirmed=4000), STREAMING])
    rounds: list[int] = []
    repair = cdc.Repairer(CONN, connect_url="http://x", sql=lambda sql: "0/1388\n")
    assert cdc.heal(lambda: next(looks), repair, kafka_up=lambda: True, timeout=10,
                    interval=0, each_round=lambda: rounds.append(1)) is None
    assert len(rounds) == 2
