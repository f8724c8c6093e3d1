"""Ledger: a balanced journal for every payment or refund that enters ``succeeded``.

Journal ids derive from the source (``jrn_payment_<id>``), and posting is
``INSERT ... ON CONFLICT DO NOTHING``: a redelivered or replayed change posts
nothing. A new journal is stored with its origin, the partition and offset of the
change event that posted it. Every journal's entries then go, keyed by account, to
the balances agent (one message per account per batch) with that origin, also for
journals posted before (the send may have died with a worker). A balance keeps,
beside its amount and in the same table value, the highest origin offset it applied
per source partition: one write per account per batch applies and records together,
so a crash can neither lose nor repeat an amount, and a journal that comes again
(at or below that mark) adds nothing, whether its change was redelivered at the
same offset or re-emitted by Debezium at a new one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import psycopg
from faust.types import EventT

from paystream.domain import Journal
from streams import metrics
from streams.adapters import postgres
from streams.adapters.cdc import Change
from streams.adapters.tables import Balance, json_key, lookup
from streams.handling import install_event_agent
from streams.journals import journal_for_change
from streams.messages import BalanceDelta
from streams.worker_parts import WorkerParts

log = logging.getLogger(__name__)
AGENT = "ledger"
BALANCES = "balances"


class Ledger:
    """Posts the journals of succeeded payments and refunds, and keeps the balances table."""

    def __init__(self, w: WorkerParts) -> None:
        self._payments_topic = w.settings.payments_topic
        self._refunds_topic = w.settings.refunds_topic
        self._balance_deltas = w.topics.balance_deltas
        self._balances = w.tables.balances
        self._balance_applied = w.tables.balance_applied
        self._stage = w.stage(AGENT)
        self.balance_agent = install_event_agent(
            w.app, self._balance_deltas, w.stage(BALANCES), self.apply_delta,
            doc="Ledger entries into the balance per account, each once")

    async def post(self, changes: Sequence[tuple[EventT[Any], Change]]) -> None:
        """Post the journals of a batch of changes in one transaction (a handler of
        changes.py)."""
        found: list[tuple[EventT[Any], Journal]] = []
        for event, change in changes:
            if not change.entered("succeeded"):
                continue  # most changes: skipped before any parsing or I/O

            async def parse(event: EventT[Any] = event, change: Change = change) -> None:
                journal = journal_for_change(
                    change, payment=event.message.topic == self._payments_topic)
                if journal is not None:
                    found.append((event, journal))

            await self._stage.isolate(event, parse)
        if not found:
            return
        origins = {j.journal_id: (e.message.partition, e.message.offset) for e, j in found}
        try:
            posted = await self._stage.with_db(
                lambda conn: postgres.post_journals(conn, [j for _, j in found], origins))
            ok = found
        except psycopg.Error:
            # One bad journal (say, an unknown merchant) fails the batch's transaction:
            # post one by one so only that one is dead-lettered.
            posted, ok = [], []
            for event, journal in found:
                try:
                    posted += await self._stage.with_db(
                        partial(postgres.post_journals, journals=[journal], origins=origins))
                    ok.append((event, journal))
                except psycopg.Error as err:
                    await self._stage.dead_letter(event, err)
        now = time.time()
        by_id = {p.journal_id: p for p in posted}
        # Sent for replays too (the balances agent drops what it already applied), one
        # message per account for the whole batch.
        deltas: dict[str, BalanceDelta] = {}
        for event, journal in ok:
            result = by_id.get(journal.journal_id)
            if result is None:
                # Posted meanwhile by a worker that held this partition before a
                # rebalance: that worker sends its entries.
                continue
            if result.new:
                metrics.JOURNALS.labels(journal.source_type).inc()
                metrics.LATENCY.labels(AGENT).observe(max(0.0, now - event.message.timestamp))
            source = None if result.origin is None else [
                f"{self._topic_of(journal)}:{result.origin[0]}", result.origin[1]]
            for entry in journal.entries:
                delta = deltas.setdefault(entry.account,
                                          BalanceDelta(entry.account, entry.currency))
                delta.amounts[journal.journal_id] = (
                    delta.amounts.get(journal.journal_id, 0) + entry.signed_amount)
                if source is not None:
                    delta.sources[journal.journal_id] = source
        for account, delta in deltas.items():
            await self._balance_deltas.send(key=json_key(account), value=delta.dumps())

    def _topic_of(self, journal: Journal) -> str:
        """The change topic a journal's origin offset belongs to."""
        return self._payments_topic if journal.source_type == "payment" else self._refunds_topic

    async def apply_delta(self, event: EventT[Any]) -> None:
        delta = BalanceDelta.loads(event.value)
        before = Balance.of(lookup(self._balances, delta.account))
        applied = dict(before.applied)
        total = 0
        for journal_id, amount in delta.amounts.items():
            source = delta.sources.get(journal_id)
            if source is not None:
                partition, offset = source
                if offset <= before.applied.get(partition, -1):
                    continue  # applied already: its change came again
                # A journal with an origin was posted by a worker that keeps offsets,
                # so no marker of an older one can name it.
                applied[partition] = max(applied.get(partition, -1), offset)
            elif self._mark(journal_id, delta.account):
                continue
            total += amount
        if total or applied != before.applied:
            self._balances[delta.account] = Balance(before.amount + total, applied).value()

    def _mark(self, journal_id: str, account: str) -> bool:
        """For a journal without an origin (posted before origins were stored): whether
        its marker says it was applied, marking it if not."""
        key = f"{journal_id}|{account}"
        if lookup(self._balance_applied, key):
            return True
        self._balance_applied[key] = True
        return False
