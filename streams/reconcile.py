"""Reading the books for reconciliation a page at a time (Postgres and Stripe), and the fixes.

The comparison itself is pure (paystream.domain.reconcile). Memory does not grow
with the window: Stripe is listed a page (100 objects) per request, each paid for
from the gateway's request budget, into a scratch SQLite file on local disk
keyed by the ids its metadata names; our payments and refunds are then read in
pages of ``PAGE_ROWS`` by creation time (one server-side cursor), each page is
matched against that file by id and compared, and its drifts are handed out at
once. A PaymentIntent may be created long after its payment (the poller finishes
a payment after an outage), so a join by time alone would need a lateness bound;
a join by id on disk needs none. Objects that changed in the last
``settle_seconds`` are left out: the pipeline may simply not have caught up.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from paystream.domain import PaymentStatus, RefundStatus
from paystream.domain.reconcile import (
    Drift,
    DriftKind,
    DriftTally,
    OurPayment,
    OurRefund,
    Pass,
    PaymentCase,
    Schedule,
    StripeIntent,
    StripeRefund,
    advance,
    compare_payment,
    compare_refund,
    in_merchant_scope,
    ledger_drifts,
    plan_passes,
)
from streams import metrics
from streams.adapters import postgres
from streams.adapters.stripe_gateway import StripeGateway
from streams.errors import StripeRejected, StripeUnavailable

# Stripe's clock against ours, when listing what was created since a moment.
CLOCK_SKEW_SECONDS = 300
# Our rows per page, and payment ids per look-up of PaymentIntents naming no payment
# of the range: a page costs a few hundred kB at most.
PAGE_ROWS = 1000
STRIPE_PAGE = 100


@dataclass(frozen=True)
class Scope:
    """Which books to read: created in [since, until) (epoch seconds, None: unbounded),
    one merchant or all, leaving out what changed in the last settle_seconds; ``ledger``:
    also the ledger-wide checks (balances, journals whose source we do not have)."""

    since: float | None = None
    merchant: str | None = None
    settle_seconds: float = 10.0
    until: float | None = None
    ledger: bool = True
    # Payments created from then on are compared by the pass over their own range (the
    # worker's window start); older ones through the PaymentIntents of this range.
    # None: since.
    covers_from: float | None = None


@dataclass
class Report:
    counts: Counter[DriftKind] = field(default_factory=Counter)
    payments: int = 0
    refunds: int = 0
    stripe_objects: int = 0
    stripe_requests: int = 0
    seconds: float = 0.0
    fixed_counts: Counter[DriftKind] = field(default_factory=Counter)

    @property
    def drifts(self) -> int:
        return sum(self.counts.values())

    @property
    def fixed(self) -> int:
        return sum(self.fixed_counts.values())

    @property
    def left(self) -> int:
        return self.drifts - self.fixed

    @property
    def left_counts(self) -> Counter[DriftKind]:
        return self.counts - self.fixed_counts

    @property
    def rate(self) -> float:
        return (self.payments + self.refunds) / self.seconds if self.seconds else 0.0


# What a caller is handed for each drift, as it is found: the drift, the creation time
# it belongs to (None: ledger-wide), and whether --fix applied its guarded move.
OnDrift = Callable[[Drift, float | None, bool], None]


class StripeLister:
    """Stripe's PaymentIntents or Refunds created in a range, a page per request, through
    the gateway (its budget, breaker and 429 handling), in the budget's background share
    when ``background`` (the leader's timer). Counts the requests it made."""

    def __init__(self, gateway: StripeGateway, *, background: bool = False) -> None:
        self.gateway = gateway
        self.background = background
        self.requests = 0
        # Listings the peer cannot filter by creation time (localstripe): filtered here.
        self._unfiltered: set[str] = set()

    async def pages(self, kind: str, *, created_gte: int | None,
                    created_lt: int | None) -> AsyncIterator[list[dict[str, Any]]]:
        # The gateway has no public one-page call; its _call is what every Stripe
        # request of the worker goes through, so the listing shares its budget.
        client = self.gateway._client.v1
        lister: Callable[..., Awaitable[Any]] = (
            client.payment_intents.list_async if kind == "payment_intents"
            else client.refunds.list_async)
        params: dict[str, Any] = {"limit": STRIPE_PAGE}
        window = {k: v for k, v in (("gte", created_gte), ("lt", created_lt)) if v is not None}
        if window and kind not in self._unfiltered:
            params["created"] = window
        listed = 0
        while True:
            try:
                self.requests += 1
                page = await self.gateway._call(
                    f"{kind}.list", partial(lister, params=dict(params)),
                    background=self.background)
            except (StripeRejected, StripeUnavailable):
                if "created" not in params or listed:
                    raise
                # localstripe refuses (400) or fails on (500) the filter: list it all.
                self._unfiltered.add(kind)
                del params["created"]
                continue
            items = [obj.to_dict() for obj in page.data]
            listed += len(items)
            yield [o for o in items
                   if (created_gte is None or int(o.get("created") or 0) >= created_gte)
                   and (created_lt is None or int(o.get("created") or 0) < created_lt)]
            if not page.has_more or not items:
                return
            params["starting_after"] = items[-1]["id"]


def _intent(o: dict[str, Any]) -> StripeIntent:
    meta = o.get("metadata") or {}
    return StripeIntent(o["id"], o["status"], int(o["amount"]), o["currency"],
                        meta.get("payment_id"), float(o.get("created") or 0),
                        meta.get("merchant_id"), meta.get("refund_id"))


class Spool:
    """Stripe's side of one pass on local disk (SQLite, a scratch file removed at close),
    keyed by the ids its metadata names, so memory holds a page, not the window."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="paystream-reconcile-", dir=directory)
        self.db = sqlite3.connect(os.path.join(self._dir.name, "stripe.sqlite"))
        # Scratch data, rebuilt by every pass: no journal, no fsync; a small page cache.
        self.db.executescript("""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -4096;
            CREATE TABLE intents (payment_id TEXT NOT NULL, id TEXT NOT NULL, status TEXT,
                amount INTEGER, currency TEXT, created REAL, merchant_id TEXT,
                refund_id TEXT, matched INTEGER NOT NULL DEFAULT 0);
            CREATE INDEX intents_payment ON intents (payment_id);
            CREATE TABLE refunds (refund_id TEXT PRIMARY KEY, id TEXT, status TEXT,
                amount INTEGER);""")

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()

    def add_intents(self, intents: Sequence[StripeIntent]) -> None:
        self.db.executemany(
            "INSERT INTO intents (payment_id, id, status, amount, currency, created, "
            "merchant_id, refund_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(i.payment_id or "", i.id, i.status, i.amount, i.currency, i.created,
              i.merchant_id, i.refund_id) for i in intents])

    def add_refunds(self, refunds: Sequence[StripeRefund]) -> None:
        # A refund id named twice keeps the first (ours makes one Refund per refund).
        self.db.executemany("INSERT OR IGNORE INTO refunds VALUES (?, ?, ?, ?)",
                            [(r.refund_id, r.id, r.status, r.amount) for r in refunds])

    @staticmethod
    def _row(r: tuple[Any, ...]) -> StripeIntent:
        return StripeIntent(r[1], r[2], r[3], r[4], r[0] or None, r[5], r[6], r[7])

    def _select(self, payment_ids: Sequence[str]) -> dict[str, list[StripeIntent]]:
        found: dict[str, list[StripeIntent]] = {}
        marks = ",".join("?" * len(payment_ids))
        for r in self.db.execute(
                "SELECT payment_id, id, status, amount, currency, created, merchant_id, "
                f"refund_id FROM intents WHERE payment_id IN ({marks}) ORDER BY rowid",
                list(payment_ids)):
            found.setdefault(r[0], []).append(self._row(r))
        return found

    def take_intents(self, payment_ids: Sequence[str]) -> dict[str, list[StripeIntent]]:
        """The PaymentIntents naming these payments, marked as matched."""
        if not payment_ids:
            return {}
        found = self._select(payment_ids)
        marks = ",".join("?" * len(payment_ids))
        self.db.execute(f"UPDATE intents SET matched = 1 WHERE payment_id IN ({marks})",
                        list(payment_ids))
        return found

    def refunds_for(self, refund_ids: Sequence[str]) -> dict[str, StripeRefund]:
        if not refund_ids:
            return {}
        marks = ",".join("?" * len(refund_ids))
        return {r[0]: StripeRefund(r[1], r[2], r[3], r[0]) for r in self.db.execute(
            f"SELECT refund_id, id, status, amount FROM refunds WHERE refund_id IN ({marks})",
            list(refund_ids))}

    def unmatched(self, batch: int = PAGE_ROWS) -> Iterator[dict[str, list[StripeIntent]]]:
        """PaymentIntents naming no payment read so far, a batch of payment ids at a time."""
        after = ""
        first = True
        while True:
            ids = [r[0] for r in self.db.execute(
                "SELECT DISTINCT payment_id FROM intents WHERE matched = 0 AND "
                "(payment_id > ? OR ?) ORDER BY payment_id LIMIT ?", (after, first, batch))]
            if not ids:
                return
            first = False
            after = ids[-1]
            yield self._select(ids)


async def _rows(conn: AsyncConnection[Any], sql: str,
                params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return list(await cur.fetchall())


async def _pages(conn: AsyncConnection[Any], name: str, sql: str,
                 params: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
    """One query's rows, PAGE_ROWS at a time, from a server-side cursor (the caller holds
    a transaction open): the result is never in our memory whole."""
    async with conn.cursor(name=name, row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        while rows := await cur.fetchmany(PAGE_ROWS):
            yield rows


_IN_SCOPE = ("(%(since)s::float8 IS NULL OR created_at >= to_timestamp(%(since)s)) "
             "AND (%(until)s::float8 IS NULL OR created_at < to_timestamp(%(until)s)) "
             "AND (%(merchant)s::text IS NULL OR merchant_id = %(merchant)s) "
             "AND updated_at < to_timestamp(%(cutoff)s)")
_PAYMENT_COLUMNS = ("id, merchant_id, status, amount, currency, stripe_payment_intent_id, "
                    "extract(epoch FROM created_at)::float8 AS created, "
                    "extract(epoch FROM updated_at)::float8 AS updated")


def _payment(r: dict[str, Any]) -> OurPayment:
    return OurPayment(r["id"], r["merchant_id"], PaymentStatus(r["status"]), r["amount"],
                      r["currency"], r["stripe_payment_intent_id"])


async def _journals(conn: AsyncConnection[Any], source_type: str,
                    ids: Sequence[str]) -> dict[str, int]:
    return {r["source_id"]: r["n"] for r in await _rows(
        conn, "SELECT source_id, count(*) AS n FROM ledger_journals "
        "WHERE source_type = %(t)s AND source_id = ANY(%(ids)s) GROUP BY source_id",
        {"t": source_type, "ids": list(ids)})}


async def _ledger_wide(conn: AsyncConnection[Any], scope: Scope, cutoff: float) -> list[Drift]:
    """Journals whose source we do not have, and per merchant and currency what the ledger
    owes against succeeded minus refunded (settled only): sums Postgres makes, one row per
    merchant and currency in our memory."""
    params = {"merchant": scope.merchant, "cutoff": cutoff}
    orphans = {(r["source_type"], r["source_id"]): r["n"] for r in await _rows(
        conn,
        "SELECT source_type, source_id, count(*) AS n FROM ledger_journals j "
        "WHERE (%(merchant)s::text IS NULL OR merchant_id = %(merchant)s) "
        "  AND NOT EXISTS (SELECT 1 FROM payments p WHERE j.source_type = 'payment' "
        "                  AND p.id = j.source_id) "
        "  AND NOT EXISTS (SELECT 1 FROM refunds r WHERE j.source_type = 'refund' "
        "                  AND r.id = j.source_id) "
        "GROUP BY source_type, source_id", params)}
    # Both sides over the same settled objects: a succeeded payment whose
    # journal is a moment late is not a drift.
    balances = {(r["merchant_id"], r["currency"]): (int(r["ledger"]), int(r["sums"]))
                for r in await _rows(conn, """
        WITH settled AS (
            SELECT 'payment' AS source_type, id, merchant_id, currency, amount AS signed
              FROM payments WHERE status = 'succeeded' AND updated_at < to_timestamp(%(cutoff)s)
                AND (%(merchant)s::text IS NULL OR merchant_id = %(merchant)s)
            UNION ALL
            SELECT 'refund', id, merchant_id, currency, -amount
              FROM refunds WHERE status = 'succeeded' AND updated_at < to_timestamp(%(cutoff)s)
                AND (%(merchant)s::text IS NULL OR merchant_id = %(merchant)s)),
        sums AS (SELECT merchant_id, currency, sum(signed) AS s FROM settled GROUP BY 1, 2),
        owed AS (
            SELECT e.merchant_id, e.currency,
                   sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END) AS s
              FROM ledger_entries e JOIN ledger_journals j ON j.id = e.journal_id
              JOIN settled x ON x.source_type = j.source_type AND x.id = j.source_id
             WHERE e.account LIKE 'merchant_available:%%' GROUP BY 1, 2)
        SELECT coalesce(sums.merchant_id, owed.merchant_id) AS merchant_id,
               coalesce(sums.currency, owed.currency) AS currency,
               coalesce(owed.s, 0) AS ledger, coalesce(sums.s, 0) AS sums
          FROM sums FULL JOIN owed ON owed.merchant_id = sums.merchant_id
                                  AND owed.currency = sums.currency""", params)}
    return ledger_drifts(orphans, balances)


class _Pass:
    """One reconciliation over a Scope: list Stripe into the spool, then our rows."""

    def __init__(self, conn: AsyncConnection[Any], stripe: StripeLister, scope: Scope,
                 fixer: AsyncConnection[Any] | None, on_drift: OnDrift,
                 progress: Callable[[str], None], spool_dir: str | None) -> None:
        self.conn, self.stripe, self.scope = conn, stripe, scope
        self.fixer, self.on_drift, self.progress = fixer, on_drift, progress
        self.spool_dir = spool_dir
        self.cutoff = time.time() - scope.settle_seconds
        self.report = Report()

    async def found(self, drifts: Sequence[Drift], at: float | None) -> None:
        for drift in drifts:
            self.report.counts[drift.kind] += 1
            fixed = False
            if drift.fix is not None and self.fixer is not None:
                fixed = await apply(self.fixer, drift)
                self.report.fixed_counts[drift.kind] += fixed
            self.on_drift(drift, at, fixed)

    async def run(self) -> Report:
        started = time.monotonic()
        spool = Spool(self.spool_dir)
        try:
            await self._list_stripe(spool)
            async with self.conn.transaction():
                await self._payments(spool)
                await self._unmatched(spool)
                await self._refunds(spool)
                if self.scope.ledger:
                    await self.found(await _ledger_wide(self.conn, self.scope, self.cutoff),
                                     None)
        finally:
            spool.close()
        self.report.seconds = time.monotonic() - started
        return self.report

    async def _list_stripe(self, spool: Spool) -> None:
        since = self.scope.since
        # A PaymentIntent of the range is made after its payment, up to now: list from
        # the range's start (less the clocks' skew) to the cutoff.
        gte = int(since - CLOCK_SKEW_SECONDS) if since is not None else None
        lt = int(self.cutoff) + 1
        requests = self.stripe.requests
        async for page in self.stripe.pages("payment_intents", created_gte=gte, created_lt=lt):
            ours = [_intent(o) for o in page if int(o.get("created") or 0) < self.cutoff]
            ours = [i for i in ours if i.payment_id or i.refund_id]
            spool.add_intents(ours)
            self.report.stripe_objects += len(ours)
            self.progress(f"listed {self.report.stripe_objects} Stripe objects")
        async for page in self.stripe.pages("refunds", created_gte=gte, created_lt=lt):
            refunds = [StripeRefund(o["id"], o["status"], int(o["amount"]),
                                    (o.get("metadata") or {}).get("refund_id"))
                       for o in page]
            refunds = [r for r in refunds if r.refund_id]
            spool.add_refunds(refunds)
            self.report.stripe_objects += len(refunds)
        self.report.stripe_requests += self.stripe.requests - requests

    def _params(self) -> dict[str, Any]:
        return {"since": self.scope.since, "until": self.scope.until,
                "merchant": self.scope.merchant, "cutoff": self.cutoff}

    async def _payments(self, spool: Spool) -> None:
        async for rows in _pages(self.conn, "reconcile_payments",
                                 f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE {_IN_SCOPE} "
                                 "ORDER BY created_at, id", self._params()):
            ids = [r["id"] for r in rows]
            intents = spool.take_intents(ids)
            journals = await _journals(self.conn, "payment", ids)
            for r in rows:
                await self.found(compare_payment(PaymentCase(
                    r["id"], _payment(r), intents.get(r["id"], []),
                    journals.get(r["id"], 0))), r["created"])
            self.report.payments += len(rows)
            self.progress(f"compared {self.report.payments} payments")

    async def _unmatched(self, spool: Spool) -> None:
        """PaymentIntents naming a payment outside the range (older, another merchant's)
        or none we have: read those payments by id and compare what was listed."""
        for groups in spool.unmatched():
            ids = [pid for pid in groups if pid]
            payments = {r["id"]: r for r in await _rows(
                self.conn, f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE id = ANY(%(ids)s)",
                {"ids": ids})}
            journals = await _journals(self.conn, "payment", list(payments))
            refund_merchant: dict[str, str] = {}
            if self.scope.merchant is not None:
                named = sorted({i.refund_id for g in groups.values() for i in g if i.refund_id})
                refund_merchant = {r["id"]: r["merchant_id"] for r in await _rows(
                    self.conn, "SELECT id, merchant_id FROM refunds WHERE id = ANY(%(ids)s)",
                    {"ids": named})}
            covers_from = self.scope.covers_from if self.scope.covers_from is not None \
                else self.scope.since
            for pid, intents in groups.items():
                row = payments.get(pid)
                if row is not None and row["updated"] >= self.cutoff:
                    continue  # changed a moment ago: the pipeline may not have caught up
                if row is not None and covers_from is not None and row["created"] >= covers_from:
                    continue  # its own range's pass compares it with these
                first = min(i.created for i in intents)
                if self.scope.until is not None and not (
                        (self.scope.since or 0) <= first < self.scope.until):
                    continue  # another range's: passes meet edge to edge, none counts twice
                merchant = self.scope.merchant
                if merchant is not None and not any(in_merchant_scope(
                        i, merchant, payment_merchant=row["merchant_id"] if row else None,
                        refund_merchant=refund_merchant.get(i.refund_id or ""))
                        for i in intents):
                    continue
                case = PaymentCase(pid, _payment(row) if row else None, intents,
                                   journals.get(pid, 0), charge_expected=False)
                await self.found(compare_payment(case), first)

    async def _refunds(self, spool: Spool) -> None:
        async for rows in _pages(self.conn, "reconcile_refunds",
                                 "SELECT id, payment_id, merchant_id, status, amount, currency, "
                                 "stripe_refund_id, extract(epoch FROM created_at)::float8 "
                                 f"AS created FROM refunds WHERE {_IN_SCOPE} "
                                 "ORDER BY created_at, id", self._params()):
            ids = [r["id"] for r in rows]
            theirs = spool.refunds_for(ids)
            journals = await _journals(self.conn, "refund", ids)
            for r in rows:
                refund = OurRefund(r["id"], r["payment_id"], r["merchant_id"],
                                   RefundStatus(r["status"]), r["amount"], r["currency"],
                                   r["stripe_refund_id"])
                await self.found(compare_refund(refund, theirs.get(r["id"]),
                                                journals.get(r["id"], 0)), r["created"])
            self.report.refunds += len(rows)


async def run(conn: AsyncConnection[Any], stripe: StripeLister, scope: Scope, *,
              fixer: AsyncConnection[Any] | None = None,
              on_drift: OnDrift = lambda drift, at, fixed: None,
              progress: Callable[[str], None] = lambda line: None,
              spool_dir: str | None = None) -> Report:
    """Reconcile the scope, handing each drift to on_drift as it is found; with a
    ``fixer`` connection, apply every guarded transition that resolves a drift."""
    return await _Pass(conn, stripe, scope, fixer, on_drift, progress, spool_dir).run()


async def apply(conn: AsyncConnection[Any], drift: Drift) -> bool:
    """The drift's guarded move; False when the row was no longer where it was read."""
    assert drift.fix is not None
    table, column = (("payments", "stripe_payment_intent_id") if drift.fix.object_type
                     == "payment" else ("refunds", "stripe_refund_id"))
    moved = await postgres.transition_rows(conn, table, drift.fix.target,
                                           [{"id": drift.fix.object_id,
                                             column: drift.fix.stripe_id}])
    return bool(moved)


# --- the worker's reconciliation ---------------------------------------------------

# The rolling pass covers this share of the window per run: the whole window every
# 12 runs (2 h at the default 10-minute interval), so a PaymentIntent that changed
# after its incremental pass (succeeded later, refunded) is seen within a cycle.
ROLLING_SHARE = 1 / 12
# What the worker leaves out as not yet settled (a webhook or the poller is on its way).
WORKER_SETTLE_SECONDS = 60.0


@dataclass
class Incremental:
    """The worker's reconciliation state: which creation times were covered (the
    incremental frontier and the rolling pass's position) and the drift counts per
    minute. Each run reconciles what was created since the last successful one and the
    next share of the window, and exports the counts over the whole window."""

    window_seconds: float
    interval_seconds: float
    merchant: str | None = None
    settle_seconds: float = WORKER_SETTLE_SECONDS
    rolling_share: float = ROLLING_SHARE
    spool_dir: str | None = None
    schedule: Schedule = field(default_factory=Schedule)
    tally: DriftTally = field(default_factory=DriftTally)
    requests: int = 0

    async def run_once(self, conn: AsyncConnection[Any], stripe: StripeLister,
                       now: float | None = None) -> Counter[DriftKind]:
        """One run of every pass due; the drift counts over the window, exported. A failed
        pass raises and leaves the schedule where it was (the next run covers it)."""
        now = time.time() if now is None else now
        passes = plan_passes(self.schedule, now=now, window=self.window_seconds,
                             settle=self.settle_seconds, interval=self.interval_seconds,
                             rolling_share=self.rolling_share)
        done: list[Pass] = []
        for planned in passes:
            # Only counts are kept, per kind and minute: bounded by the window's minutes.
            found: Counter[tuple[DriftKind, float | None]] = Counter()

            def count(drift: Drift, at: float | None, fixed: bool,
                      found: Counter[tuple[DriftKind, float | None]] = found) -> None:
                found[drift.kind, None if at is None else at // 60 * 60] += 1

            scope = Scope(since=planned.start, until=planned.end, merchant=self.merchant,
                          settle_seconds=self.settle_seconds, ledger=planned.ledger,
                          covers_from=now - self.window_seconds)
            report = await run(conn, stripe, scope, spool_dir=self.spool_dir, on_drift=count)
            self.requests += report.stripe_requests
            self.tally.replace(planned, ((kind, at, n) for (kind, at), n in found.items()))
            done.append(planned)
        self.schedule = advance(self.schedule, done)
        counts = self.tally.counts(now - self.window_seconds)
        for kind in DriftKind:
            metrics.RECONCILE_DRIFT.labels(kind.value).set(counts.get(kind, 0))
        metrics.RECONCILE_LAST.set(time.time())
        return counts
