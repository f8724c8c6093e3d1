"""Gathering a payment's facts: Postgres first (it names the keys and times), then Kafka,
Stripe and the worker at once; a source that fails is reported, never fatal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import psycopg

from paystream.domain.trace import TraceFacts, waiting_for
from paystream.settings import Settings
from paystream.trace_rows import load_facts
from streams.ops.trace import kafka, peers

T = TypeVar("T")

# Records are looked for from this long before the row's creation (clocks of
# Postgres and Kafka differ between hosts) ...
MARGIN_BEFORE = 10.0
# ... and, for a settled payment, until this long after its last row change
# (Debezium's lag behind the commit, under load).
MARGIN_AFTER = 60.0


@dataclass
class Gathered:
    facts: TraceFacts
    # source -> "ok ..." or "unavailable: why" (or "not applicable: why")
    sources: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    kafka: kafka.KafkaFindings | None = None


def _last_known(facts: TraceFacts) -> float:
    times = [facts.payment.updated_at]
    times += [r.updated_at for r in facts.refunds]
    times += [s.updated_at for s in facts.submissions]
    times += [j.created_at for j in facts.journals]
    times += [n.updated_at for n in facts.notifications]
    return max(times)


async def _timed(seconds: dict[str, float], name: str, work: Awaitable[T]) -> T:
    started = time.monotonic()
    try:
        return await work
    finally:
        seconds[name] = time.monotonic() - started


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"unavailable: {type(err).__name__}" + (f": {text[:200]}" if text else "")


async def gather(settings: Settings, payment_id: str, *, timeout: float = 10.0,
                 max_records: int = kafka.MAX_RECORDS_PER_PARTITION) -> Gathered | None:
    """The payment's facts from every source (None if Postgres has no such payment).
    Postgres failing raises: without it there is no payment to speak of."""
    seconds: dict[str, float] = {}
    started = time.monotonic()
    async with await psycopg.AsyncConnection.connect(
            settings.database_url, autocommit=True, connect_timeout=int(timeout)) as conn:
        facts = await load_facts(conn, payment_id, now=time.time())
    seconds["postgres"] = time.monotonic() - started
    if facts is None:
        return None
    out = Gathered(facts, {"postgres": "ok"}, seconds)

    # A settled payment's records end soon after its last change; an unsettled one's
    # may still be arriving, so read to the end of each partition (still bounded).
    settled = facts.payment.status != "pending" and not waiting_for(facts)
    until = (_last_known(facts) + MARGIN_AFTER) if settled else time.time() + 1
    probes = kafka.probes_for(settings, facts, margin=MARGIN_BEFORE)
    pi_id = facts.payment.stripe_payment_intent_id
    jobs: dict[str, Awaitable[Any]] = {
        "kafka": kafka.find(settings, probes, until_ms=int(until * 1000), timeout=timeout,
                            max_records=max_records),
        "worker": peers.pending_entry(settings, payment_id, timeout=timeout),
    }
    if pi_id:
        jobs["stripe"] = peers.payment_intent(settings, pi_id, timeout=timeout)
    else:
        out.sources["stripe"] = "not applicable: no PaymentIntent"
    names = list(jobs)
    results = await asyncio.gather(
        *(asyncio.wait_for(_timed(seconds, n, jobs[n]), timeout * 3) for n in names),
        return_exceptions=True)
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result  # KeyboardInterrupt, cancellation: not a source's failure
            out.sources[name] = _why(result)
        elif name == "kafka":
            out.kafka = result
            facts = replace(facts, changes=tuple(result.changes),
                            messages=tuple(result.messages))
            cut = f", stopped early on {', '.join(result.truncated)}" if result.truncated else ""
            out.sources[name] = (f"ok: {result.records_read} records read on "
                                 f"{len(result.read)} partitions{cut}")
        elif name == "worker":
            facts = replace(facts, pending=result)
            out.sources[name] = ("ok: in the pending table" if result is not None
                                 else "ok: not in the pending table")
        else:
            facts = replace(facts, intent=result)
            out.sources[name] = "ok"
    out.facts = facts
    seconds["total"] = time.monotonic() - started
    return out
