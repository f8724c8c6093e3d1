"""Ledger: a balanced journal for every payment or refund that enters ``succeeded``.

Journal ids derive from the source (``jrn_payment_<id>``), and posting is
``INSERT ... ON CONFLICT DO NOTHING``: a redelivered or replayed change posts
nothing. Every journal's entries then go, keyed by account, to the balances
agent (one message per account per batch), which skips (journal, account) pairs it
has already applied.
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
from streams.adapters.tables import balance_amount, json_key
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
        try:
            posted = await self._stage.with_db(
                lambda conn: postgres.post_journals(conn, [j for _, j in found]))
            ok = found
        except psycopg.Error:
            # One bad journal (say, an unknown merchant) fails the batch's transaction:
            # post one by one so only that one is dead-lettered.
            posted, ok = [], []
            for event, journal in found:
                try:
                    posted += await self._stage.with_db(
                        partial(postgres.post_journals, journals=[journal]))
                    ok.append((event, journal))
                except psycopg.Error as err:
                    await self._stage.dead_letter(event, err)
        now = time.time()
        new = set(posted)
        # Sent for replays too (the balances agent drops what it already applied), one
        # message per account for the whole batch.
        deltas: dict[str, BalanceDelta] = {}
        for event, journal in ok:
            if journal.journal_id in new:
                metrics.JOURNALS.labels(journal.source_type).inc()
                change_ts = event.message.timestamp
                metrics.LATENCY.labels(AGENT).observe(max(0.0, now - change_ts))
            for entry in journal.entries:
                delta = deltas.setdefault(entry.account,
                                          BalanceDelta(entry.account, entry.currency))
                delta.amounts[journal.journal_id] = (
                    delta.amounts.get(journal.journal_id, 0) + entry.signed_amount)
        for account, delta in deltas.items():
            await self._balance_deltas.send(key=json_key(account), value=delta.dumps())

    async def apply_delta(self, event: EventT[Any]) -> None:
        delta = BalanceDelta.loads(event.value)
        total = 0
        for journal_id, amount in delta.amounts.items():
            applied_key = f"{journal_id}|{delta.account}"
            if not self._balance_applied.get(applied_key):
                total += amount
                self._balance_applied[applied_key] = True
        if total:
            self._balances[delta.account] = balance_amount(self._balances[delta.account]) + total
