"""`paystream trace` output: readable text, or one JSON object for scripts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from paystream.domain.trace import Trace, build_trace, facts_json
from streams.ops.trace.gather import Gathered


def as_json(gathered: Gathered) -> dict[str, Any]:
    trace = build_trace(gathered.facts)
    found = gathered.kafka
    return {
        **trace.as_json(),
        "sources": gathered.sources,
        "facts": facts_json(gathered.facts),
        "kafka_read": None if found is None else {
            name: {"from_offset": first, "to_offset": end, "records": n}
            for name, (first, end, n) in sorted(found.read.items())},
        "took_ms": {k: round(v * 1000) for k, v in gathered.seconds.items()},
    }


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def _gap(seconds: float | None) -> str:
    if seconds is None:
        return ""
    ms = seconds * 1000
    if abs(ms) < 10_000:
        return f"{ms:+.0f} ms"
    if abs(seconds) < 600:
        return f"{seconds:+.1f} s"
    return f"{seconds / 60:+.1f} min"


def lines(gathered: Gathered) -> list[str]:
    facts = gathered.facts
    trace: Trace = build_trace(facts)
    p = facts.payment
    day = datetime.fromtimestamp(p.created_at, UTC).strftime("%Y-%m-%d")
    out = [f"Payment {p.id}: {trace.where}",
           f"  {p.amount} {p.currency}, customer {p.customer}, {p.payment_method}, "
           f"merchant {p.merchant_id}"]
    if p.failure_code or p.failure_message:
        out.append(f"  failure: {p.failure_code}: {p.failure_message}")
    if facts.intent is not None:
        i = facts.intent
        charges = "; ".join(
            f"charge {c.get('id')} {c.get('status', '')} refunded {c.get('amount_refunded', 0)}"
            for c in i.charges) or "no charge"
        out.append(f"  at Stripe: {i.id} {i.status}, {i.amount} {i.currency}, {charges}")
    if facts.pending is not None:
        e = facts.pending
        out.append(f"  pending table: {e.status}, {e.attempts} poll(s), next look at "
                   f"{_clock(e.next_poll_at)}" + (f", last error {e.last_error}"
                                                  if e.last_error else ""))
    out += ["", "Sources"]
    out += [f"  {name:<9} {state}" for name, state in gathered.sources.items()]
    out += ["", f"Path (UTC, {day})"]
    for leg in trace.path:
        at = _clock(leg.at) if leg.at is not None else "-"
        out.append(f"  {leg.step.value:<18} {at:<13} {_gap(leg.since_previous):>11}  {leg.note}")
    out += ["", "Timeline (UTC)                 since start   source    what"]
    for h in trace.timeline:
        detail = f"  [{h.detail}]" if h.detail else ""
        out.append(f"  {_clock(h.at)}  {_gap(h.at - trace.start):>14}   {h.source:<9} "
                   f"{h.what}{detail}")
    out += ["", "Waiting for"]
    out += [f"  - {w}" for w in trace.waiting_for] or ["  nothing: settled, booked and told"]
    took = ", ".join(f"{k} {v:.2f}s" for k, v in gathered.seconds.items() if k != "total")
    out.append(f"\n(trace took {gathered.seconds.get('total', 0.0):.2f}s: {took})")
    return out
