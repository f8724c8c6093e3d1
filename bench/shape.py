"""A benchmark in production's shape, and the proof: one decoder, no bench scans, idle CPU.

Production runs one Debezium connector decoding the WAL once; a benchmark that
adds its own change feed (testkit/cdc_feed.py) beside the stack's makes
Postgres and Connect decode everything twice. So while a bench measures, the
stack's worker is stopped and the stack's connector paused (testkit.stack's
`StackPaused`): the feed is the one decoder. The stack catches up afterwards
from its replication slot (the bench's payments are terminal by then, and every
consumer is idempotent).

And a benchmark must not bill itself to the system: `TableScans` counts the
sequential scans Postgres ran on the tables the pipeline and the bench touch
(a per-payment figure above ~0 means a query that misses its index), and
`MachineIdle` says how much of the machine was left over, so a figure can say
whether the machine or the pipeline was the limit.
"""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from stack.config import Config

# The tables a payment's path writes or reads, and the ones the benches query.
WATCHED_TABLES = ("payments", "refunds", "fraud_decisions", "stripe_submissions",
                  "ledger_journals", "ledger_entries", "merchant_notifications", "merchants")


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


def requests_in(metrics_text: str) -> dict[str, float]:
    """{request kind: requests served so far} (Produce, Fetch, ...; all versions
    together) from the broker's JMX exporter page."""
    counts: dict[str, float] = {}
    for found in _REQUESTS.finditer(metrics_text):
        counts[found["request"]] = counts.get(found["request"], 0.0) + float(found["value"])
    return counts


_REQUESTS = re.compile(r'^kafka_network_requests_total\{request="(?P<request>[^"]+)",'
                       r'version="[^"]*",?\}\s+(?P<value>\S+)$', re.M)


def _per_payment(before: dict[str, float], after: dict[str, float], payments: int,
                 strip: str = "") -> dict[str, float]:
    out = {name.removeprefix(strip): round((n - before.get(name, 0.0)) / max(1, payments), 2)
           for name, n in sorted(after.items()) if n > before.get(name, 0.0)}
    if out:
        out["total"] = round(sum(out.values()), 2)
    return out


class KafkaMessages:
    """Messages the brokers took in per topic, and requests they served per kind, between
    start() and per_payment(), from their JMX exporters: what each payment costs in
    produced messages, and in the requests that carried them (each request costs the
    client and the broker CPU of its own, however many messages it holds). A broker
    counts the messages of the partitions it leads, so every node of the stack's
    cluster is read and the counts summed (3 in the ha topology). Empty when no
    exporter is reachable."""

    def __init__(self, metrics_urls: list[str] | None = None) -> None:
        self._urls = metrics_urls or [f"http://127.0.0.1:{port}/metrics"
                                      for _, _, port in Config().kafka_nodes()]
        self._before: list[str] = []
        self._after: list[str] = []

    def _pages(self) -> list[str]:
        pages = []
        for url in self._urls:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    pages.append(str(resp.read().decode()))
            except OSError:
                pages.append("")
        return pages

    def start(self) -> None:
        self._before = self._pages()

    def per_payment(self, payments: int, *, strip: str = "") -> dict[str, float]:
        """{topic: messages per payment} for topics that took any, plus "total"; strip
        is a prefix taken off topic names (a bench worker's app id) to keep them short.
        Also marks the end of the measurement for requests_per_payment()."""
        self._after = self._pages()
        return _per_payment(_summed(messages_in, self._before),
                            _summed(messages_in, self._after), payments, strip)

    def requests_per_payment(self, payments: int) -> dict[str, float]:
        """{request kind: requests per payment}, plus "total", up to per_payment()'s end."""
        return _per_payment(_summed(requests_in, self._before),
                            _summed(requests_in, self._after), payments)


def _summed(counts: Callable[[str], dict[str, float]], pages: list[str]) -> dict[str, float]:
    """counts() of each broker's exporter page, added up name by name."""
    total: dict[str, float] = {}
    for page in pages:
        for name, n in counts(page).items():
            total[name] = total.get(name, 0.0) + n
    return total
