"""Whether CDC streams (Connect, the replication slot, Debezium's heartbeat) and its repair.

Debezium runs `heartbeat.action.query` every heartbeat interval (10 s): it
inserts a row into cdc_heartbeat (db/migrations/006_cdc_heartbeat.sql) with
the WAL position of that moment. The table is in the publication, so the beat
travels through the slot like any change, and the slot's confirmed_flush_lsn
passes the beat's position once Connect has written the events before it to
Kafka and committed their offsets. Hence:

- no beat for FRESH_S: Debezium's streaming loop is not running;
- a beat older than FRESH_S that the slot has not confirmed: changes do not
  reach Kafka (the slot may be held by a session nobody reads from).

Standard library only, like the rest of the stack tooling that uses it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

HEARTBEAT_TABLE = "cdc_heartbeat"
# A beat is confirmed about one heartbeat interval (10 s) after it was written;
# three intervals without one is a stall, not a slow moment.
FRESH_S = 30.0
# A failed task is restarted at most this often, so a broken config is not
# restarted in a loop.
RESTART_COOLDOWN_S = 60.0
# Connector states set on purpose through Connect's REST API (PUT .../pause or
# .../stop: a benchmark pausing CDC while it measures, an operator): CDC does not
# stream, and nothing here changes that or calls it a fault.
ON_PURPOSE = ("PAUSED", "STOPPED")


@dataclass(frozen=True)
class Connector:
    """A Debezium connector as registered (connectors/<file>.json) and the slot it reads."""

    name: str
    slot: str
    user: str


@dataclass(frozen=True)
class Task:
    id: int
    state: str
    trace: str = ""


@dataclass(frozen=True)
class Walsender:
    """A replication session of the connector's database user."""

    pid: int
    app: str
    started: float  # backend_start, seconds since the epoch
    write_lsn: int | None  # what the client reported it has received


@dataclass(frozen=True)
class Beat:
    at: float
    lsn: int


@dataclass(frozen=True)
class State:
    """One look at CDC; `now` is Postgres's clock, as are the other times."""

    connector: Connector
    problem: str | None = None  # Connect or Postgres could not be asked
    now: float = 0.0
    connector_state: str | None = None  # None: not registered
    tasks: tuple[Task, ...] = ()
    slot_exists: bool = False
    active_pid: int | None = None
    confirmed: int | None = None
    wal_status: str | None = None
    walsenders: tuple[Walsender, ...] = field(default_factory=tuple)
    last_beat: float | None = None
    unconfirmed: Beat | None = None  # the oldest beat past the slot's confirmed position

    @property
    def holder(self) -> Walsender | None:
        """The connector user's walsender that holds the slot, if one does."""
        return next((w for w in self.walsenders if w.pid == self.active_pid), None)

    def beat_age(self) -> float | None:
        return None if self.last_beat is None else self.now - self.last_beat

    def unconfirmed_age(self) -> float | None:
        return None if self.unconfirmed is None else self.now - self.unconfirmed.at

    def stalled(self) -> bool:
        """Debezium's beats stopped, or one waits for confirmation for longer than FRESH_S."""
        ages = (self.beat_age(), self.unconfirmed_age())
        return any(age is not None and age > FRESH_S for age in ages)


def lsn(text: str | None) -> int | None:
    if not text:
        return None
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _state_sql(conn: Connector) -> str:
    slot, user = literal(conn.slot), literal(conn.user)
    return f"""
SELECT json_build_object(
  'now', extract(epoch FROM clock_timestamp()),
  'slot', (SELECT json_build_object('pid', active_pid, 'confirmed', confirmed_flush_lsn::text,
                                    'wal_status', wal_status)
           FROM pg_replication_slots WHERE slot_name = {slot}),
  'walsenders', (SELECT coalesce(json_agg(json_build_object(
                     'pid', a.pid, 'app', a.application_name,
                     'started', extract(epoch FROM a.backend_start),
                     'write_lsn', r.write_lsn::text) ORDER BY a.backend_start), '[]')
                 FROM pg_stat_activity a LEFT JOIN pg_stat_replication r USING (pid)
                 WHERE a.backend_type = 'walsender' AND a.usename = {user}
                   -- A session streaming another slot of the same user (a test's or a
                   -- benchmark's own feed) is not one waiting for ours.
                   AND a.pid NOT IN (SELECT active_pid FROM pg_replication_slots
                                     WHERE slot_name <> {slot} AND active_pid IS NOT NULL)),
  'last_beat', (SELECT extract(epoch FROM max(beat_at)) FROM {HEARTBEAT_TABLE}),
  'unconfirmed', (SELECT json_build_object('at', extract(epoch FROM h.beat_at), 'lsn', h.lsn::text)
                  FROM {HEARTBEAT_TABLE} h JOIN pg_replication_slots s ON s.slot_name = {slot}
                  WHERE h.lsn > s.confirmed_flush_lsn ORDER BY h.beat_at LIMIT 1))
"""


def _rest(method: str, url: str, timeout: float = 3.0) -> tuple[int, object]:
    req = urllib.request.Request(url, method=method, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, None


def read(conn: Connector, *, connect_url: str, sql: Callable[[str], str]) -> State:
    """Connect's status of the connector plus what the primary knows about its slot and beats.

    `sql` runs a query on the primary as the superuser (pg_stat_activity shows
    other roles' sessions only to it) and returns the single value it printed.
    """
    try:
        code, body = _rest("GET", f"{connect_url}/connectors/{conn.name}/status")
    except OSError as err:
        return State(conn, problem=f"Connect REST API not answering ({err})")
    connector_state: str | None = None  # stays None for 404: not registered
    tasks: tuple[Task, ...] = ()
    if code == 200 and isinstance(body, dict):
        connector_state = body.get("connector", {}).get("state")
        tasks = tuple(Task(int(t["id"]), t["state"], t.get("trace", ""))
                      for t in body.get("tasks", []))
    elif code != 404:
        return State(conn, problem=f"Connect answered HTTP {code} for the connector status")
    try:
        found = json.loads(sql(_state_sql(conn)))
    except (OSError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [""])[0].removeprefix("psql: error: ")
        return State(conn, problem=f"primary not answering ({first[:100]})",
                     connector_state=connector_state, tasks=tasks)
    slot = found["slot"] or {}
    unconfirmed = found["unconfirmed"]
    return State(
        conn, now=float(found["now"]), connector_state=connector_state, tasks=tasks,
        slot_exists=bool(found["slot"]), active_pid=slot.get("pid"),
        confirmed=lsn(slot.get("confirmed")), wal_status=slot.get("wal_status"),
        walsenders=tuple(Walsender(int(w["pid"]), w["app"] or "", float(w["started"]),
                                   lsn(w["write_lsn"])) for w in found["walsenders"]),
        last_beat=None if found["last_beat"] is None else float(found["last_beat"]),
        unconfirmed=None if unconfirmed is None
        else Beat(float(unconfirmed["at"]), lsn(unconfirmed["lsn"]) or 0))


def on_purpose(state: State) -> bool:
    """Whether the connector was paused or stopped through Connect's REST API."""
    return state.problem is None and state.connector_state in ON_PURPOSE


def held_note(state: State, *, connect_url: str) -> str:
    """What `make status` and `make up` say about a connector paused or stopped on purpose."""
    name = state.connector.name
    return (f"connector {name} {(state.connector_state or '').lower()} on purpose "
            f"(resume: curl -X PUT {connect_url}/connectors/{name}/resume)")


def stale_holder(state: State, *, kafka_up: bool = True) -> Walsender | None:
    """The connector user's session that holds the slot without streaming for the task, if any.

    A task's own session is left alone: it is stale only when a task failed
    because of it, when a newer session of the same user waits for the slot (the
    task's retry), or when it received past a beat it has not confirmed for
    FRESH_S while Kafka was up (it reads for a task Connect gave up on, such as
    one whose graceful stop failed in a broker outage).
    """
    holder = state.holder
    # A paused or stopped connector is not streaming on purpose (a benchmark pauses
    # it): its task's session may sit on the slot without confirming anything.
    if holder is None or state.connector_state not in ("RUNNING", "FAILED") \
            or any(t.state not in ("RUNNING", "FAILED") for t in state.tasks):
        return None
    if any(f"is active for PID {holder.pid}" in t.trace for t in state.tasks):
        return holder
    if not state.stalled():
        return None
    if any(w.started > holder.started for w in state.walsenders if w.pid != holder.pid):
        return holder
    beat, age = state.unconfirmed, state.unconfirmed_age()
    if (kafka_up and beat is not None and age is not None and age > FRESH_S
            and holder.started < beat.at and (holder.write_lsn or 0) >= beat.lsn):
        return holder
    return None


def verdict(state: State, *, kafka_up: bool = True) -> str | None:
    """None when CDC streams, else a short reason (what `make status` prints)."""
    conn = state.connector
    if state.problem:
        return state.problem
    if state.connector_state is None:
        return f"connector {conn.name} not registered"
    if state.connector_state != "RUNNING":
        return f"connector {conn.name} {state.connector_state}"
    if not state.tasks:
        return f"connector {conn.name} has no task"
    for task in state.tasks:
        if task.state != "RUNNING":
            cause = task.trace.splitlines()[0][:100] if task.trace else ""
            return f"task {task.id} {task.state}" + (f": {cause}" if cause else "")
    if not state.slot_exists:
        return f"no replication slot {conn.slot}"
    if state.wal_status == "lost":
        return f"slot {conn.slot} lost WAL it needed (max_slot_wal_keep_size): snapshot again"
    stale = stale_holder(state, kafka_up=kafka_up)
    if stale is not None:
        return f"slot held by stale pid {stale.pid}"
    if state.active_pid is None:
        return f"slot {conn.slot} not in use: the task is not streaming"
    if state.holder is None:
        return f"slot {conn.slot} held by pid {state.active_pid}, not a {conn.user} session"
    if not kafka_up:
        return "Kafka not answering"
    beat_age, unconfirmed_age = state.beat_age(), state.unconfirmed_age()
    if beat_age is None:
        return "no heartbeat yet"
    if beat_age > FRESH_S:
        return f"no heartbeat for {beat_age:.0f}s"
    if unconfirmed_age is not None and unconfirmed_age > FRESH_S:
        return f"changes not confirmed for {unconfirmed_age:.0f}s"
    return None


class Repairer:
    """Ends a stale session holding the slot and restarts failed tasks; says what it did."""

    def __init__(self, conn: Connector, *, connect_url: str, sql: Callable[[str], str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.conn = conn
        self.connect_url = connect_url
        self.sql = sql
        self.clock = clock
        self.restarted: dict[str, float] = {}

    def terminate(self, pid: int) -> bool:
        """pg_terminate_backend, in the statement that checks the pid is still our walsender."""
        out = self.sql(f"SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) "
                       f"FROM pg_stat_activity WHERE pid = {int(pid)} "
                       f"AND backend_type = 'walsender' AND usename = {literal(self.conn.user)}")
        return out.strip() == "t"

    def restart_due(self, path: str) -> bool:
        """Whether `path` may be posted now (once per RESTART_COOLDOWN_S); notes it if so."""
        now, last = self.clock(), self.restarted.get(path)
        if last is not None and now - last < RESTART_COOLDOWN_S:
            return False
        self.restarted[path] = now
        return True

    def restart(self, path: str) -> bool:
        """POSTs a Connect restart `path`, unless that was done less than a cooldown ago."""
        if not self.restart_due(path):
            return False
        code, _ = _rest("POST", f"{self.connect_url}{path}", timeout=10)
        return code in (200, 202, 204)

    def __call__(self, state: State, *, kafka_up: bool = True) -> list[str]:
        done = []
        stale = stale_holder(state, kafka_up=kafka_up)
        if stale is not None and self.terminate(stale.pid):
            age = state.now - stale.started
            done.append(f"terminated pid {stale.pid} ({stale.app or 'no application name'}, "
                        f"connected {age:.0f}s ago): it held slot {self.conn.slot} "
                        f"without streaming for the task")
        name = self.conn.name
        if state.connector_state == "FAILED" and self.restart(f"/connectors/{name}/restart"):
            done.append(f"restarted connector {name} (FAILED)")
        for task in state.tasks:
            path = f"/connectors/{name}/tasks/{task.id}/restart"
            if task.state == "FAILED" and self.restart(path):
                done.append(f"restarted task {name}-{task.id} (FAILED)")
        return done


def write_beat(sql: Callable[[str], str]) -> int | None:
    """Writes a beat now (as whoever `sql` runs as); its WAL position, None if that failed."""
    try:
        return lsn(sql(f"INSERT INTO {HEARTBEAT_TABLE} DEFAULT VALUES RETURNING lsn").strip())
    except (OSError, ValueError, RuntimeError):
        return None


def heal(look: Callable[[], State], repair: Repairer, *, kafka_up: Callable[[], bool],
         timeout: float, say: Callable[[str], None] = print, interval: float = 2.0,
         each_round: Callable[[], object] | None = None) -> str | None:
    """Repairs until CDC streams; None then, else the last reason at the deadline.

    Streaming here means more than `verdict`: a beat written at the start must
    come out confirmed. Right after Kafka restarts, a task Connect gave up on
    still holds the slot and its beats are younger than FRESH_S, so the verdict
    alone would pass a pipeline that delivers nothing. `each_round` runs before
    each look (Connect.settle: restart a Connect that abandoned a task).
    """
    deadline = time.monotonic() + timeout
    probe = write_beat(repair.sql)
    while True:
        if each_round is not None:
            each_round()
        state, up = look(), kafka_up()
        reason = verdict(state, kafka_up=up)
        if probe is None:
            probe = write_beat(repair.sql)
        if reason is None and (probe is None or (state.confirmed or 0) < probe):
            reason = "a change written by make up not confirmed yet"
        # Paused or stopped by someone (a benchmark): waiting would not change it.
        if reason is None or state.connector_state in ("PAUSED", "STOPPED"):
            return reason
        for action in repair(state, kafka_up=up):
            say(action)
        if time.monotonic() >= deadline:
            return reason
        time.sleep(interval)
