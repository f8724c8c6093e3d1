"""stack/cdc.py: when CDC counts as streaming, whose slot session is stale, what gets repaired."""

from __future__ import annotations

from dataclasses import replace

import pytest

from stack import cdc

CONN = cdc.Connector("paystream-payments", "paystream", "debezium")
NOW = 1_000_000.0
TASK = cdc.Walsender(pid=100, app="Debezium Streaming", started=NOW - 600, write_lsn=5000)


def streaming(**changes: object) -> cdc.State:
    """A healthy look: the task's session holds the slot, a beat 4 s ago, all confirmed."""
    state = cdc.State(CONN, now=NOW, connector_state="RUNNING", tasks=(cdc.Task(0, "RUNNING"),),
                      slot_exists=True, active_pid=TASK.pid, confirmed=5000, wal_status="reserved",
                      walsenders=(TASK,), last_beat=NOW - 4, unconfirmed=None)
    return replace(state, **changes)


def test_lsn_text_is_read_as_a_number() -> None:
    assert cdc.lsn("0/40EFC20") == 0x40EFC20
    assert cdc.lsn("1/0") == 1 << 32
    assert cdc.lsn(None) is None


def test_a_streaming_slot_is_healthy() -> None:
    assert cdc.verdict(streaming()) is None
    # A beat waiting for its confirmation for less than FRESH_S is normal.
    assert cdc.verdict(streaming(unconfirmed=cdc.Beat(NOW - 12, 5100))) is None


@pytest.mark.parametrize(("changes", "reason"), [
    ({"problem": "primary not answering (x)"}, "primary not answering (x)"),
    ({"connector_state": None}, "connector paystream-payments not registered"),
    ({"connector_state": "UNASSIGNED"}, "connector paystream-payments UNASSIGNED"),
    ({"tasks": (cdc.Task(0, "FAILED", "org.x.Boom: it broke\n\tat ..."),)},
     "task 0 FAILED: org.x.Boom: it broke"),
    ({"slot_exists": False}, "no replication slot paystream"),
    ({"wal_status": "lost"},
     "slot paystream lost WAL it needed (max_slot_wal_keep_size): snapshot again"),
    ({"active_pid": None}, "slot paystream not in use: the task is not streaming"),
    ({"active_pid": 7}, "slot paystream held by pid 7, not a debezium session"),
    ({"last_beat": None}, "no heartbeat yet"),
    ({"last_beat": NOW - 45}, "no heartbeat for 45s"),
    ({"unconfirmed": cdc.Beat(NOW - 40, 9000)}, "changes not confirmed for 40s"),
])
def test_each_way_cdc_can_be_unhealthy_has_its_reason(changes: dict, reason: str) -> None:
    assert cdc.verdict(streaming(**changes)) == reason


def test_a_newer_session_waiting_while_nothing_advances_makes_the_holder_stale() -> None:
    waiting = cdc.Walsender(pid=200, app="Debezium Streaming", started=NOW - 20, write_lsn=None)
    state = streaming(walsenders=(TASK, waiting), last_beat=NOW - 40)
    assert cdc.stale_holder(state) == TASK
    assert cdc.verdict(state) == "slot held by stale pid 100"
    # While beats still come and get confirmed, a second session is not evidence.
    assert cdc.stale_holder(streaming(walsenders=(TASK, waiting))) is None


def test_a_holder_that_reads_past_a_beat_it_never_confirms_is_stale_while_kafka_is_up() -> None:
    # A task Connect gave up on: its session reads (its own beats) but nothing reaches Kafka.
    zombie = replace(TASK, write_lsn=9500)
    state = streaming(walsenders=(zombie,), unconfirmed=cdc.Beat(NOW - 35, 9000))
    assert cdc.stale_holder(state, kafka_up=True) == zombie
    assert cdc.stale_holder(state, kafka_up=False) is None
    assert cdc.verdict(state, kafka_up=False) == "Kafka not answering"


def test_a_session_that_connected_after_the_unconfirmed_beat_gets_its_chance() -> None:
    # The task that just took over must first read and confirm the backlog.
    fresh = cdc.Walsender(pid=300, app="Debezium Streaming", started=NOW - 5, write_lsn=9500)
    state = streaming(active_pid=300, walsenders=(fresh,), unconfirmed=cdc.Beat(NOW - 35, 9000))
    assert cdc.stale_holder(state) is None
    # A holder that has not even received up to the beat is slow, not stale.
    slow = replace(TASK, write_lsn=8000)
    assert cdc.stale_holder(streaming(walsenders=(slow,),
                                      unconfirmed=cdc.Beat(NOW - 35, 9000))) is None


def test_a_paused_or_stopped_connector_is_left_alone() -> None:
    # A benchmark pauses the connector: its task keeps the slot and confirms nothing.
    zombie_like = streaming(walsenders=(replace(TASK, write_lsn=9500),),
                            unconfirmed=cdc.Beat(NOW - 35, 9000))
    assert cdc.stale_holder(zombie_like) is not None
    paused = replace(zombie_like, connector_state="PAUSED", tasks=(cdc.Task(0, "PAUSED"),))
    assert cdc.stale_holder(paused) is None
    assert cdc.verdict(paused) == "connector paystream-payments PAUSED"
    assert Recorder()(paused) == []
    stopped = replace(zombie_like, connector_state="STOPPED", tasks=())
    assert cdc.stale_holder(stopped) is None


def test_a_task_failing_on_the_holders_pid_names_it_stale_at_once() -> None:
    failed = cdc.Task(0, "FAILED", 'ERROR: replication slot "paystream" is active for PID 100')
    assert cdc.stale_holder(streaming(tasks=(failed,))) == TASK


class Recorder(cdc.Repairer):
    """A Repairer whose database and REST calls are recorded instead of made."""

    def __init__(self) -> None:
        self.clock_now = 0.0
        super().__init__(CONN, connect_url="http://connect", sql=self.run,
                         clock=lambda: self.clock_now)
        self.sql_seen: list[str] = []
        self.posted: list[str] = []

    def run(self, sql: str) -> str:
        self.sql_seen.append(sql)
        return "0/1388\n" if "RETURNING lsn" in sql else "t\n"  # 0x1388 = 5000

    def restart(self, path: str) -> bool:
        if not super().restart_due(path):
            return False
        self.posted.append(path)
        return True


def test_repair_terminates_only_the_stale_session_checking_it_is_a_debezium_walsender() -> None:
    waiting = cdc.Walsender(pid=200, app="Debezium Streaming", started=NOW - 20, write_lsn=None)
    repair = Recorder()
    done = repair(streaming(walsenders=(TASK, waiting), last_beat=NOW - 40))
    assert len(done) == 1 and done[0].startswith("terminated pid 100 ")
    [sql] = repair.sql_seen
    assert "pg_terminate_backend" in sql and "pid = 100" in sql
    assert "backend_type = 'walsender'" in sql and "usename = 'debezium'" in sql
    assert repair(streaming()) == []


def test_a_failed_task_is_restarted_but_not_in_a_loop() -> None:
    failed = streaming(tasks=(cdc.Task(0, "FAILED", "boom"),))
    repair = Recorder()
    assert repair(failed) == ["restarted task paystream-payments-0 (FAILED)"]
    assert repair(failed) == []
    repair.clock_now += cdc.RESTART_COOLDOWN_S + 1
    assert repair(failed) == ["restarted task paystream-payments-0 (FAILED)"]
    assert repair.posted == ["/connectors/paystream-payments/tasks/0/restart"] * 2


def test_make_up_waits_until_a_beat_it_wrote_is_confirmed() -> None:
    # Right after a broker restart the verdict can pass while nothing is delivered yet.
    looks = iter([streaming(confirmed=4000), streaming(confirmed=4000), streaming(confirmed=5000)])
    repair, said = Recorder(), []
    assert cdc.heal(lambda: next(looks), repair, kafka_up=lambda: True, timeout=10,
                    say=said.append, interval=0) is None
    assert "INSERT INTO cdc_heartbeat DEFAULT VALUES RETURNING lsn" in repair.sql_seen[0]
    assert next(looks, None) is None, "heal returned before the beat was confirmed"


def test_make_up_gives_up_on_a_paused_connector_at_once() -> None:
    paused = streaming(connector_state="PAUSED", tasks=(cdc.Task(0, "PAUSED"),))
    assert cdc.heal(lambda: paused, Recorder(), kafka_up=lambda: True, timeout=60,
                    interval=0) == "connector paystream-payments PAUSED"
