"""A benchmark in production's shape, and the proof: one decoder, no bench scans, idle CPU.

Production runs one Debezium connector decoding the WAL once; a benchmark that
adds its own change feed (connectors/cdc_feed.py) beside the stack's makes
Postgres and Connect decode everything twice. So while a bench measures, the
stack's worker is stopped and the stack's connector paused: the feed is the one
decoder. The stack catches up afterwards from its replication slot (the bench's
payments are terminal by then, and every consumer is idempotent).

And a benchmark must not bill itself to the system: `TableScans` counts the
sequential scans Postgres ran on the tables the pipeline and the bench touch
(a per-payment figure above ~0 means a query that misses its index), and
`MachineIdle` says how much of the machine was left over, so a figure can say
whether the machine or the pipeline was the limit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
# Run in ROOT, the checkout that holds the stack package.
STACK = [sys.executable, "-m", "stack"]
STACK_CONNECTOR = "paystream-payments"
# The tables a payment's path writes or reads, and the ones the benches query.
WATCHED_TABLES = ("payments", "refunds", "fraud_decisions", "stripe_submissions",
                  "ledger_journals", "ledger_entries", "merchant_notifications", "merchants")


def _connect(url: str, method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(url.rstrip("/") + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        return err.code, None


def stack_worker_up() -> bool:
    """Whether the stack's worker runs (`python3 -m stack json`: {name: {"up": ...}})."""
    status = subprocess.run([*STACK, "json"], capture_output=True, text=True, cwd=ROOT)
    try:
        return bool(json.loads(status.stdout)["worker"]["up"])
    except (ValueError, KeyError, TypeError):
        return False


class StackPaused:
    """`with StackPaused(connect_url):` the stack's worker stopped and its connector
    paused for the block, both as they were after it (resumed only if we paused it)."""

    def __init__(self, connect_url: str | None, *, pause_connector: bool = True) -> None:
        self._url = connect_url
        self._pause_connector = pause_connector
        self.worker_stopped = False
        self.connector_paused = False

    def __enter__(self) -> StackPaused:
        if stack_worker_up():
            subprocess.run([*STACK, "stop", "worker"], check=True, capture_output=True,
                           cwd=ROOT)
            self.worker_stopped = True
        if self._url and self._pause_connector:
            try:
                status, body = _connect(self._url, "GET",
                                        f"/connectors/{STACK_CONNECTOR}/status")
                if status == 200 and body["connector"]["state"] == "RUNNING":
                    code, _ = _connect(self._url, "PUT", f"/connectors/{STACK_CONNECTOR}/pause")
                    self.connector_paused = code in (200, 202)
            except (OSError, KeyError, TypeError):
                pass
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.connector_paused and self._url:
            try:
                _connect(self._url, "PUT", f"/connectors/{STACK_CONNECTOR}/resume")
            except OSError as failure:
                print(f"could not resume {STACK_CONNECTOR} ({failure}): "
                      "run make up", file=sys.stderr)
        if self.worker_stopped:
            subprocess.run([*STACK, "start", "worker"], capture_output=True, cwd=ROOT)

    def describe(self) -> str:
        return (f"stack worker {'stopped' if self.worker_stopped else 'not running'}, "
                f"stack connector {'paused' if self.connector_paused else 'left as it was'}")


class TableScans:
    """Sequential scans (and rows they read) per watched table between two snapshots."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self._before: dict[str, tuple[int, int]] = {}

    async def _snapshot(self) -> dict[str, tuple[int, int]]:
        cur = await self._conn.execute(
            "SELECT relname, seq_scan, seq_tup_read FROM pg_stat_user_tables "
            "WHERE relname = ANY(%s)", (list(WATCHED_TABLES),))
        return {name: (int(scans), int(rows)) for name, scans, rows in await cur.fetchall()}

    async def start(self) -> None:
        self._before = await self._snapshot()

    async def per_payment(self, payments: int) -> dict[str, Any]:
        """{table: (scans per payment, rows read per payment)} for tables scanned at all.

        Postgres publishes a busy session's counts about once a second, so the last
        second of a run may be missing: a figure of ~0 is what matters here.
        """
        after = await self._snapshot()
        out: dict[str, Any] = {}
        for name, (scans, rows) in after.items():
            was_scans, was_rows = self._before.get(name, (0, 0))
            if scans - was_scans:
                out[name] = {"scans": scans - was_scans,
                             "per_payment": round((scans - was_scans) / max(1, payments), 3),
                             "rows_read": rows - was_rows}
        return out


def _cpu_ticks() -> tuple[int, int]:
    """(idle + iowait, all) jiffies of the machine so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


class MachineIdle:
    """The share of the machine's CPU left idle between start() and share()."""

    def __init__(self) -> None:
        self._start = _cpu_ticks()

    def start(self) -> None:
        self._start = _cpu_ticks()

    def share(self) -> float:
        idle, total = _cpu_ticks()
        spent = total - self._start[1]
        return round((idle - self._start[0]) / spent, 3) if spent else 0.0


def cores() -> int:
    return os.cpu_count() or 1


def messages_in(metrics_text: str) -> dict[str, float]:
    """{topic: messages taken in so far} from the broker's JMX exporter page."""
    return {found["topic"]: float(found["value"])
            for found in _MESSAGES_IN.finditer(metrics_text)}


# One line per topic (the unlabelled line is the broker's total); exporters differ on
# a trailing comma inside the braces.
_MESSAGES_IN = re.compile(r'^kafka_server_brokertopicmetrics_messagesinpersec_total'
                          r'\{topic="(?P<topic>[^"]+)",?\}\s+(?P<value>\S+)$', re.M)


class KafkaMessages:
    """Messages the broker took in per topic between start() and per_payment(), from
    its JMX exporter (MessagesInPerSec counts): what each payment costs in produced
    messages, by topic. Empty when the exporter is not reachable."""

    def __init__(self, metrics_url: str | None = None) -> None:
        port = os.environ.get("KAFKA_METRICS_PORT", "9404")
        self._url = metrics_url or f"http://127.0.0.1:{port}/metrics"
        self._before: dict[str, float] = {}

    def _snapshot(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(self._url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        return messages_in(text)

    def start(self) -> None:
        self._before = self._snapshot()

    def per_payment(self, payments: int, *, strip: str = "") -> dict[str, float]:
        """{topic: messages per payment} for topics that took any, plus "total"; strip
        is a prefix taken off topic names (a bench worker's app id) to keep them short."""
        after = self._snapshot()
        out = {topic.removeprefix(strip): round((n - self._before.get(topic, 0.0))
                                                / max(1, payments), 2)
               for topic, n in sorted(after.items()) if n > self._before.get(topic, 0.0)}
        if out:
            out["total"] = round(sum(out.values()), 2)
        return out
