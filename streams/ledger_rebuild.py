"""The ledger as a pure function of the change stream: rebuild it from the topics and compare.

The payments and refunds change topics are read from their earliest offset up
to their end at the start; every change that moves a row into ``succeeded``
makes the journal the worker would post (same domain functions, same ids). The
result is compared with the live ``ledger_journals``/``ledger_entries``: the
journals on either side only, journals whose entries differ, and account
balances. Kafka's retention bounds what can be rebuilt: a topic that dropped
old segments rebuilds only what it still holds (see ``retention.ms``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from paystream.domain import Journal, journal_for_payment, journal_for_refund
from paystream.settings import Settings

from .dlq import read_topic
from .records import PaymentRow, RefundRow, decode_change

Entries = tuple[tuple[str, str, int, str], ...]


@dataclass
class Diff:
    rebuilt: int
    live: int
    only_rebuilt: list[str] = field(default_factory=list)
    only_live: list[str] = field(default_factory=list)
    entries_differ: list[str] = field(default_factory=list)
    balances_differ: dict[str, tuple[int, int]] = field(default_factory=dict)
    undecodable: int = 0

    @property
    def identical(self) -> bool:
        return not (self.only_rebuilt or self.only_live or self.entries_differ
                    or self.balances_differ)

    def lines(self) -> list[str]:
        out = [f"missing from the live ledger: {j}" for j in self.only_rebuilt]
        out += [f"in the live ledger, not implied by the change stream: {j}"
                for j in self.only_live]
        out += [f"entries differ: {j}" for j in self.entries_differ]
        out += [f"balance of {account}: rebuilt {r}, live {live}"
                for account, (r, live) in sorted(self.balances_differ.items())]
        return out

    def summary(self) -> str:
        verdict = "identical" if self.identical else "DIFFERENT"
        return (f"{self.rebuilt} journals rebuilt from the change stream, {self.live} live: "
                f"{verdict}" + (f" ({self.undecodable} undecodable messages skipped)"
                                if self.undecodable else ""))

    def as_json(self) -> dict[str, Any]:
        return {"identical": self.identical, "rebuilt": self.rebuilt, "live": self.live,
                "only_rebuilt": self.only_rebuilt, "only_live": self.only_live,
                "entries_differ": self.entries_differ,
                "balances_differ": {k: list(v) for k, v in self.balances_differ.items()},
                "undecodable": self.undecodable}


def _entries(journal: Journal) -> Entries:
    return tuple(sorted((e.account, e.direction, e.amount, e.currency)
                        for e in journal.entries))


def journal_of(topic: str, key: bytes | None, value: bytes | None) -> Journal | None:
    """The journal one change message implies, exactly as the worker's ledger posts it."""
    change = decode_change(key, value)
    if change is None or not change.entered("succeeded"):
        return None
    if topic.endswith(".payments"):
        p = PaymentRow.parse(change.row)
        return journal_for_payment(p.id, p.merchant_id, p.amount, p.currency)
    r = RefundRow.parse(change.row)
    return journal_for_refund(r.id, r.payment_id, r.merchant_id, r.amount, r.currency)


async def replay(settings: Settings, merchant: str | None,
                 progress: Callable[[str], None]) -> tuple[dict[str, Journal], int]:
    """Journals implied by the change topics, by id (a redelivered change implies the same)."""
    journals: dict[str, Journal] = {}
    undecodable = 0
    for topic in (settings.payments_topic, settings.refunds_topic):
        records = await read_topic(settings.kafka_bootstrap, topic, timeout=30.0)
        progress(f"read {len(records)} change events of {topic}")
        for record in records:
            try:
                journal = journal_of(topic, record.key, record.value)
            except Exception:  # noqa: BLE001 - the worker dead-letters these too
                undecodable += 1
                continue
            if journal is not None and (merchant is None or journal.merchant_id == merchant):
                journals.setdefault(journal.journal_id, journal)
    return journals, undecodable


async def live_ledger(settings: Settings, merchant: str | None) -> dict[str, Entries]:
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        cur = await conn.execute(
            "SELECT j.id, e.account, e.direction, e.amount, e.currency FROM ledger_journals j "
            "JOIN ledger_entries e ON e.journal_id = j.id "
            "WHERE %(m)s::text IS NULL OR j.merchant_id = %(m)s", {"m": merchant})
        rows = await cur.fetchall()
    live: dict[str, list[tuple[str, str, int, str]]] = {}
    for journal_id, account, direction, amount, currency in rows:
        live.setdefault(journal_id, []).append((account, direction, int(amount), currency))
    return {j: tuple(sorted(entries)) for j, entries in live.items()}


def _balances(journals: dict[str, Entries]) -> dict[str, int]:
    out: dict[str, int] = {}
    for entries in journals.values():
        for account, direction, amount, _ in entries:
            out[account] = out.get(account, 0) + (amount if direction == "debit" else -amount)
    return out


async def verify(settings: Settings, *, merchant: str | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> Diff:
    """Rebuild from the change stream and compare with the live ledger."""
    rebuilt_journals, undecodable = await replay(settings, merchant, progress)
    rebuilt = {j: _entries(journal) for j, journal in rebuilt_journals.items()}
    live = await live_ledger(settings, merchant)
    diff = Diff(len(rebuilt), len(live), undecodable=undecodable)
    diff.only_rebuilt = sorted(set(rebuilt) - set(live))
    diff.only_live = sorted(set(live) - set(rebuilt))
    diff.entries_differ = sorted(j for j in set(rebuilt) & set(live) if rebuilt[j] != live[j])
    ours, theirs = _balances(rebuilt), _balances(live)
    diff.balances_differ = {a: (ours.get(a, 0), theirs.get(a, 0)) for a in set(ours) | set(theirs)
                            if ours.get(a, 0) != theirs.get(a, 0)}
    return diff
