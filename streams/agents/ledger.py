"""Ledger: a balanced journal for every payment or refund that enters ``succeeded``.

Journal ids derive from the source (``jrn_payment_<id>``), and posting is
``INSERT ... ON CONFLICT DO NOTHING``: a redelivered or replayed change posts
nothing. Every journal's entries then go, keyed by account, to the balances
agent, which skips (journal, account) pairs it has already applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import psycopg
from faust.types import EventT, StreamT

from paystream.domain import Journal
from streams import metrics
from streams.adapters import postgres, topics
from streams.adapters.cdc import Change
from streams.adapters.tables import balance_applied, balances, json_key
from streams.app import app, settings
from streams.dead_letters import dead_letter
from streams.handling import count, isolate, with_db
from streams.journals import journal_for_change
from streams.messages import BalanceDelta

log = logging.getLogger(__name__)
AGENT = "ledger"
BALANCES = "balances"


def journal_for(topic: str, change: Change | None) -> Journal | None:
    """The journal a change event posts, if it moves a payment or refund into succeeded."""
    return journal_for_change(change, payment=topic == settings.payments_topic)


async def post(changes: Sequence[tuple[EventT[Any], Change]]) -> None:
    """Post the journals of a batch of changes in one transaction (a handler of changes.py)."""
    found: list[tuple[EventT[Any], Journal]] = []
    for event, change in changes:
        if not change.entered("succeeded"):
            continue  # most changes: skipped before any parsing or I/O

        async def parse(event: EventT[Any] = event, change: Change = change) -> None:
            journal = journal_for(event.message.topic, change)
            if journal is not None:
                found.append((event, journal))

        await isolate(event, AGENT, parse)
    if not found:
        return
    try:
        posted = await with_db(lambda conn: postgres.post_journals(conn, [j for _, j in found]),
                               what=AGENT)
        ok = found
    except psycopg.Error:
        # One bad journal (say, an unknown merchant) fails the batch's transaction:
        # post one by one so only that one is dead-lettered.
        posted, ok = [], []
        for event, journal in found:
            try:
                posted += await with_db(partial(postgres.post_journals, journals=[journal]),
                                        what=AGENT)
                ok.append((event, journal))
            except psycopg.Error as err:
                await dead_letter(event, AGENT, err)
    now = time.time()
    new = set(posted)
    for event, journal in ok:
        if journal.journal_id in new:
            metrics.JOURNALS.labels(journal.source_type).inc()
            change_ts = event.message.timestamp
            metrics.LATENCY.labels(AGENT).observe(max(0.0, now - change_ts))
        # Sent for replays too: the balances agent drops what it already applied.
        for entry in journal.entries:
            delta = BalanceDelta(journal_id=journal.journal_id, account=entry.account,
                                 amount=entry.signed_amount, currency=entry.currency)
            await topics.balance_deltas.send(key=json_key(entry.account), value=delta.dumps())


@app.agent(topics.balance_deltas, name=BALANCES, concurrency=1)
async def balance_agent(stream: StreamT[Any]) -> None:
    async for event in stream.events():
        count(BALANCES, (event,))
        await isolate(event, BALANCES, partial(apply_delta, event.value))


async def apply_delta(raw: bytes) -> None:
    delta = BalanceDelta.loads(raw)
    applied_key = f"{delta.journal_id}|{delta.account}"
    if balance_applied.get(applied_key):
        return
    balances[delta.account] += delta.amount
    balance_applied[applied_key] = True
