"""One payment's story: its facts in time order, its path's timings, what it waits for.

The gatherers (``paystream trace`` in streams/ops/trace, the API's trace route)
read rows, change events, internal messages, Stripe and the worker's pending
table into the plain facts below; everything said about them (the order, the
time between the path's steps, where the payment stands and what it waits
for) is decided here, once, for both. Times are Unix seconds (float): every
source is read on one clock's terms, and a negative gap between two sources
is shown as it is rather than hidden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .status import PaymentStatus, RefundStatus

# --- facts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentRow:
    id: str
    merchant_id: str
    amount: int
    currency: str
    status: str
    customer: str
    payment_method: str
    amount_refunded: int
    stripe_payment_intent_id: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: float
    updated_at: float
    # Whether the merchant has a webhook URL: without one no merchant event is queued.
    merchant_has_webhook: bool = True


@dataclass(frozen=True, slots=True)
class FraudRow:
    approved: bool
    score: int
    rules_hit: tuple[str, ...]
    decided_at: float


@dataclass(frozen=True, slots=True)
class SubmissionRow:
    """A row of stripe_submissions: created when the first lease was taken (just before
    the first call), updated at each later claim and when an answer was recorded."""

    object_type: str
    object_id: str
    attempts: int
    stripe_id: str | None
    last_error: str | None
    lease_until: float | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class RefundRow:
    id: str
    amount: int
    currency: str
    status: str
    failure_code: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class EntryRow:
    account: str
    direction: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class JournalRow:
    id: str
    source_type: str
    source_id: str
    created_at: float
    entries: tuple[EntryRow, ...] = ()


@dataclass(frozen=True, slots=True)
class NotificationRow:
    """An outbox row; the table keeps the count of attempts and the last one's outcome,
    not each attempt."""

    event_id: str
    event_type: str
    object_id: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: float
    updated_at: float
    next_attempt_at: float
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class StripeEventRow:
    """A Stripe webhook the API received that touched the payment or its refunds."""

    id: str
    type: str
    outcome: str | None
    received_at: float


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A Debezium change event of the payment or one of its refunds, where Kafka holds it."""

    topic: str
    partition: int
    offset: int
    object_id: str
    op: str
    old_status: str | None
    new_status: str | None
    lsn: int | None
    tx_id: int | None
    commit_ms: int | None
    kafka_ms: int


@dataclass(frozen=True, slots=True)
class InternalMessage:
    """A message between the workers' agents about the payment (fraud check, verdict,
    pending command)."""

    topic: str
    partition: int
    offset: int
    kind: str
    kafka_ms: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """The payment's entry in the worker's pending table (its web view)."""

    status: str
    attempts: int
    since: float
    next_poll_at: float
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class StripeIntent:
    """The PaymentIntent as Stripe answers it now."""

    id: str
    status: str
    amount: int
    currency: str
    created: float
    charges: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class TraceFacts:
    """Everything known about one payment. A source that was not read is None (the
    caller says why); one read with nothing found is empty."""

    payment: PaymentRow
    now: float
    fraud: FraudRow | None = None
    submissions: tuple[SubmissionRow, ...] = ()
    refunds: tuple[RefundRow, ...] = ()
    journals: tuple[JournalRow, ...] = ()
    notifications: tuple[NotificationRow, ...] = ()
    stripe_events: tuple[StripeEventRow, ...] = ()
    changes: tuple[ChangeEvent, ...] | None = None
    messages: tuple[InternalMessage, ...] | None = None
    pending: PendingEntry | None = None
    intent: StripeIntent | None = None


# --- what is made of them ---------------------------------------------------------------


class Step(StrEnum):
    """The payment's path through the pipeline, in order."""

    COMMITTED = "committed"
    IN_KAFKA = "in_kafka"
    FRAUD_DECIDED = "fraud_decided"
    STRIPE_CALLED = "stripe_called"
    STRIPE_ANSWERED = "stripe_answered"
    STATUS_WRITTEN = "status_written"
    JOURNAL_POSTED = "journal_posted"
    MERCHANT_NOTIFIED = "merchant_notified"


@dataclass(frozen=True, slots=True)
class Leg:
    """One step of the path: when (None if not reached), the time since the step
    before it that was reached, and a note saying how it is known or why it is absent."""

    step: Step
    at: float | None
    since_previous: float | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Happening:
    """One line of the timeline."""

    at: float
    source: str
    what: str
    detail: str = ""
    ref: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trace:
    payment_id: str
    status: str
    terminal: bool
    # The story starts when the payment was created; earlier times (Stripe's whole
    # seconds, a clock behind) show as negative.
    start: float
    timeline: tuple[Happening, ...]
    path: tuple[Leg, ...]
    where: str
    waiting_for: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        previous: float | None = None
        lines = []
        for h in self.timeline:
            lines.append({
                "at": iso(h.at),
                "since_start_ms": _ms(h.at - self.start),
                "since_previous_ms": _ms(0.0 if previous is None else h.at - previous),
                "source": h.source, "what": h.what, "detail": h.detail, **(
                    {"ref": dict(h.ref)} if h.ref else {})})
            previous = h.at
        return {
            "payment_id": self.payment_id, "status": self.status, "terminal": self.terminal,
            "start": iso(self.start), "where": self.where, "waiting_for": list(self.waiting_for),
            "path": [{"step": leg.step.value, "at": None if leg.at is None else iso(leg.at),
                      "since_previous_ms": None if leg.since_previous is None
                      else _ms(leg.since_previous), "note": leg.note} for leg in self.path],
            "timeline": lines,
        }


def iso(at: float) -> str:
    """UTC, to the millisecond."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _status(raw: str) -> PaymentStatus:
    return PaymentStatus(raw)


# --- the path ---------------------------------------------------------------------------


def _payment_changes(facts: TraceFacts) -> list[ChangeEvent]:
    p = facts.payment
    return sorted((c for c in facts.changes or () if c.object_id == p.id),
                  key=lambda c: (c.kafka_ms, c.offset))


def _entered_now(facts: TraceFacts) -> ChangeEvent | None:
    """The change event that moved the payment into the status it has now."""
    found = None
    for change in _payment_changes(facts):
        if change.new_status == facts.payment.status and change.old_status != change.new_status:
            found = found or change
    return found


def _submission(facts: TraceFacts) -> SubmissionRow | None:
    return next((s for s in facts.submissions
                 if s.object_type == "payment" and s.object_id == facts.payment.id), None)


def _step_times(facts: TraceFacts) -> dict[Step, tuple[float | None, str]]:
    p = facts.payment
    status = _status(p.status)
    times: dict[Step, tuple[float | None, str]] = {}
    create = next((c for c in _payment_changes(facts) if c.op in ("c", "r")), None)
    if create is not None and create.commit_ms is not None:
        times[Step.COMMITTED] = (create.commit_ms / 1000, "Debezium source.ts_ms")
    else:
        times[Step.COMMITTED] = (p.created_at, "created_at (transaction start)")
    if create is not None:
        times[Step.IN_KAFKA] = (create.kafka_ms / 1000,
                                f"{create.topic}[{create.partition}]@{create.offset}")
    elif facts.changes is None:
        times[Step.IN_KAFKA] = (None, "Kafka not read")
    else:
        times[Step.IN_KAFKA] = (None, "no create event found")
    if facts.fraud is not None:
        verdict = "approved" if facts.fraud.approved else "blocked: " + ", ".join(
            facts.fraud.rules_hit)
        times[Step.FRAUD_DECIDED] = (facts.fraud.decided_at, verdict)
    else:
        times[Step.FRAUD_DECIDED] = (None, "no decision yet")
    sub = _submission(facts)
    if status is PaymentStatus.BLOCKED or (sub is None and status.is_terminal):
        times[Step.STRIPE_CALLED] = (None, f"not applicable ({p.status})")
        times[Step.STRIPE_ANSWERED] = (None, f"not applicable ({p.status})")
    elif sub is None:
        times[Step.STRIPE_CALLED] = (None, "not called yet")
        times[Step.STRIPE_ANSWERED] = (None, "not called yet")
    else:
        times[Step.STRIPE_CALLED] = (sub.created_at, "first lease taken")
        answered = sub.lease_until is None and (sub.stripe_id or sub.last_error)
        times[Step.STRIPE_ANSWERED] = (
            (sub.updated_at, f"answer recorded, attempt {sub.attempts}"
             + (f" ({sub.stripe_id})" if sub.stripe_id else f" ({sub.last_error})"))
            if answered else (None, f"attempt {sub.attempts} in flight"))
    times[Step.STATUS_WRITTEN] = _status_written(facts, status, sub)
    journal = next((j for j in facts.journals
                    if j.source_type == "payment" and j.source_id == p.id), None)
    if status is not PaymentStatus.SUCCEEDED:
        times[Step.JOURNAL_POSTED] = (None, f"not applicable ({p.status})")
    elif journal is None:
        times[Step.JOURNAL_POSTED] = (None, "not posted yet")
    else:
        times[Step.JOURNAL_POSTED] = (journal.created_at, journal.id)
    times[Step.MERCHANT_NOTIFIED] = _notified(facts, status)
    return times


def _status_written(facts: TraceFacts, status: PaymentStatus,
                    sub: SubmissionRow | None) -> tuple[float | None, str]:
    p = facts.payment
    if status is PaymentStatus.PENDING:
        return None, "still pending"
    entered = _entered_now(facts)
    if entered is not None and entered.commit_ms is not None:
        return entered.commit_ms / 1000, f"commit of -> {p.status} (LSN {entered.lsn})"
    if not facts.refunds:
        return p.updated_at, "updated_at"
    # Refunds update the row (amount_refunded) after its status was written.
    if sub is not None and sub.lease_until is None and sub.stripe_id:
        return sub.updated_at, "approx.: Stripe answer recorded (same transaction)"
    return None, "unknown without the change events (the row was updated since)"


def _notified(facts: TraceFacts, status: PaymentStatus) -> tuple[float | None, str]:
    p = facts.payment
    if not status.is_terminal:
        return None, "not applicable until terminal"
    if not p.merchant_has_webhook:
        return None, "not applicable (the merchant has no webhook URL)"
    note = _payment_notification(facts)
    if note is None:
        return None, "no merchant event queued yet"
    if note.delivered_at is not None:
        return note.delivered_at, f"{note.event_type} delivered, attempt {note.attempts}"
    return None, f"{note.event_type} {note.status}, {note.attempts} attempt(s)"


def _payment_notification(facts: TraceFacts) -> NotificationRow | None:
    p = facts.payment
    wanted = f"payment.{p.status}"
    return next((n for n in facts.notifications
                 if n.object_id == p.id and n.event_type == wanted), None)


def path_of(facts: TraceFacts) -> tuple[Leg, ...]:
    """The path's steps in order, each with the time since the last step reached before it."""
    times = _step_times(facts)
    legs = []
    previous: float | None = None
    for step in Step:
        at, note = times[step]
        legs.append(Leg(step, at, None if at is None or previous is None else at - previous,
                        note))
        if at is not None:
            previous = at
    return tuple(legs)


# --- where it is, what it waits for ------------------------------------------------------


def waiting_for(facts: TraceFacts) -> tuple[str, ...]:
    """What has yet to happen for the payment (and its refunds) to be settled and told;
    empty when nothing is outstanding."""
    p = facts.payment
    status = _status(p.status)
    sub = _submission(facts)
    poll = _next_poll(facts)
    waits: list[str] = []
    if status is PaymentStatus.PENDING:
        waits.append(_pending_wait(facts, sub, poll))
    elif status is PaymentStatus.PROCESSING:
        waits.append("Stripe to settle the PaymentIntent: its webhook, or the poller's next "
                     f"look{poll}")
    elif status is PaymentStatus.REQUIRES_ACTION:
        waits.append("the customer to complete 3-D Secure at Stripe; then Stripe's webhook, "
                     f"or the poller's next look{poll}")
    if status is PaymentStatus.SUCCEEDED and not any(
            j.source_type == "payment" for j in facts.journals):
        waits.append("the ledger journal of the succeeded payment")
    for refund in facts.refunds:
        if not RefundStatus(refund.status).is_terminal:
            waits.append(f"Stripe's answer for refund {refund.id}")
        elif refund.status == RefundStatus.SUCCEEDED and not any(
                j.source_type == "refund" and j.source_id == refund.id for j in facts.journals):
            waits.append(f"the ledger journal of refund {refund.id}")
    if status.is_terminal and p.merchant_has_webhook:
        note = _payment_notification(facts)
        if note is None:
            waits.append(f"the merchant event payment.{p.status} to be queued")
        elif note.status == "pending":
            tried = (f"attempt {note.attempts} failed ({note.last_error}), "
                     if note.attempts else "")
            waits.append(f"delivery of {note.event_type} to the merchant: {tried}next try at "
                         f"{iso(note.next_attempt_at)}")
    for note in facts.notifications:
        if note.status == "failed":
            waits.append(f"a person: {note.event_type} was dead-lettered after "
                         f"{note.attempts} attempts ({note.last_error}); "
                         "`paystream dlq replay` queues it again")
    return tuple(waits)


def _next_poll(facts: TraceFacts) -> str:
    if facts.pending is None:
        return ""
    due = facts.pending.next_poll_at - facts.now
    when = "due now" if due <= 0 else f"in {_human(due)}"
    return f" (at {iso(facts.pending.next_poll_at)}, {when})"


def _pending_wait(facts: TraceFacts, sub: SubmissionRow | None, poll: str) -> str:
    if facts.changes is not None and not _payment_changes(facts):
        return "Debezium: the insert has not reached Kafka (is the connector running?)"
    if facts.fraud is None:
        return "the fraud decision (the fraud stages have not decided yet)"
    if not facts.fraud.approved:
        return "the blocked status to be written (decided, not applied yet)"
    if sub is None:
        return "its turn in the Stripe sequence (approved, not sent yet)"
    if sub.lease_until is not None and sub.lease_until > facts.now:
        return (f"Stripe's answer to attempt {sub.attempts} (lease until "
                f"{iso(sub.lease_until)})")
    error = f" (last error: {sub.last_error})" if sub.last_error else ""
    return f"the poller to retry Stripe{poll}{error}"


def _human(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def where_now(facts: TraceFacts, waits: Sequence[str]) -> str:
    status = _status(facts.payment.status)
    if status.is_terminal and not waits:
        return f"{status.value}: done"
    if status.is_terminal:
        return f"{status.value} (terminal), with follow-ups outstanding"
    return f"{status.value}: waiting for {waits[0]}"


# --- the timeline -----------------------------------------------------------------------


def timeline_of(facts: TraceFacts) -> tuple[Happening, ...]:
    """Every fact with a time, oldest first (ties keep the order of the path)."""
    p = facts.payment
    lines: list[Happening] = [
        Happening(p.created_at, "postgres", "payment created",
                  f"{p.amount} {p.currency}, customer {p.customer}, {p.payment_method}"),
    ]
    if p.updated_at > p.created_at:
        lines.append(Happening(p.updated_at, "postgres", f"payment row last updated ({p.status})",
                               _failure(p.failure_code, p.failure_message)))
    if facts.fraud is not None:
        f = facts.fraud
        lines.append(Happening(
            f.decided_at, "postgres", "fraud decision: " + ("approved" if f.approved
                                                             else "blocked"),
            f"score {f.score}" + (f", rules {', '.join(f.rules_hit)}" if f.rules_hit else "")))
    for s in facts.submissions:
        lines.append(Happening(s.created_at, "postgres", f"Stripe {s.object_type} call started",
                               f"lease taken for {s.object_id}"))
        if s.updated_at > s.created_at or s.lease_until is None:
            state = "in flight" if s.lease_until is not None else "answer recorded"
            lines.append(Happening(s.updated_at, "postgres", f"Stripe {s.object_type} {state}",
                                   f"attempt {s.attempts}"
                                   + (f", {s.stripe_id}" if s.stripe_id else "")
                                   + (f", last error {s.last_error}" if s.last_error else "")))
    for r in facts.refunds:
        lines.append(Happening(r.created_at, "postgres", f"refund {r.id} created",
                               f"{r.amount} {r.currency}"))
        if r.updated_at > r.created_at:
            lines.append(Happening(r.updated_at, "postgres", f"refund {r.id} now {r.status}",
                                   r.failure_code or ""))
    for j in facts.journals:
        lines.append(Happening(j.created_at, "postgres", f"journal {j.id} posted", ", ".join(
            f"{e.direction} {e.account} {e.amount} {e.currency}" for e in j.entries)))
    for n in facts.notifications:
        lines.append(Happening(n.created_at, "postgres", f"merchant event {n.event_type} queued",
                               n.event_id))
        if n.delivered_at is not None:
            lines.append(Happening(n.delivered_at, "postgres",
                                   f"merchant event {n.event_type} delivered",
                                   f"attempt {n.attempts}, HTTP {n.last_status_code}"))
        elif n.attempts:
            lines.append(Happening(n.updated_at, "postgres",
                                   f"merchant event {n.event_type} attempt {n.attempts} failed",
                                   f"{n.last_error or ''}; {n.status}"))
    for e in facts.stripe_events:
        lines.append(Happening(e.received_at, "postgres", f"Stripe webhook {e.type} received",
                               f"{e.outcome or 'in progress'} ({e.id})"))
    lines += _kafka_lines(facts)
    if facts.pending is not None:
        lines.append(Happening(facts.pending.since, "worker", "in the worker's pending table",
                               f"{facts.pending.status}, {facts.pending.attempts} poll(s)"))
    if facts.intent is not None:
        i = facts.intent
        lines.append(Happening(i.created, "stripe", f"PaymentIntent {i.id} created",
                               f"Stripe's time, whole seconds; now {i.status}, "
                               f"{i.amount} {i.currency}"))
    order = {name: n for n, name in enumerate(("postgres", "kafka", "worker", "stripe"))}
    indexed = sorted(enumerate(lines), key=lambda x: (x[1].at, order.get(x[1].source, 9), x[0]))
    return tuple(h for _, h in indexed)


_OPS = {"c": "insert", "u": "update", "d": "delete", "r": "snapshot"}


def _kafka_lines(facts: TraceFacts) -> list[Happening]:
    lines = []
    for c in facts.changes or ():
        at = (c.commit_ms if c.commit_ms is not None else c.kafka_ms) / 1000
        lag = "" if c.commit_ms is None else f", in Kafka +{c.kafka_ms - c.commit_ms} ms"
        kind = "payment" if c.object_id == facts.payment.id else f"refund {c.object_id}"
        if c.op in ("c", "r"):
            move = f"{_OPS[c.op]}, {c.new_status}"
        elif c.old_status != c.new_status:
            move = f"{_OPS.get(c.op, c.op)}, {c.old_status} -> {c.new_status}"
        else:
            move = f"{_OPS.get(c.op, c.op)}, still {c.new_status}"
        lines.append(Happening(
            at, "kafka", f"change event of the {kind}: {move}",
            f"{c.topic}[{c.partition}]@{c.offset}, LSN {c.lsn}, tx {c.tx_id}{lag}",
            {"topic": c.topic, "partition": c.partition, "offset": c.offset, "op": c.op,
             "lsn": c.lsn, "tx_id": c.tx_id, "commit_ms": c.commit_ms,
             "kafka_ms": c.kafka_ms}))
    for m in facts.messages or ():
        lines.append(Happening(m.kafka_ms / 1000, "kafka", m.kind,
                               f"{m.topic}[{m.partition}]@{m.offset}"
                               + (f", {m.detail}" if m.detail else ""),
                               {"topic": m.topic, "partition": m.partition, "offset": m.offset,
                                "kafka_ms": m.kafka_ms}))
    return lines


def _failure(code: str | None, message: str | None) -> str:
    if not code and not message:
        return ""
    return f"{code or ''}: {message or ''}".strip(": ")


_TIMES = frozenset({"created_at", "updated_at", "decided_at", "lease_until", "next_attempt_at",
                    "delivered_at", "received_at", "since", "next_poll_at", "created"})


def _plain(value: Any) -> Any:
    """A fact as JSON: its times as ISO strings (the key says which are times)."""
    if isinstance(value, dict):
        return {k: (iso(v) if k in _TIMES and isinstance(v, int | float) else _plain(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def facts_json(facts: TraceFacts) -> dict[str, Any]:
    """The facts themselves, for scripts (a source not read is null)."""
    def some(items: Sequence[Any] | None) -> list[Any] | None:
        return None if items is None else [_plain(asdict(i)) for i in items]

    return {
        "payment": _plain(asdict(facts.payment)),
        "fraud_decision": None if facts.fraud is None else _plain(asdict(facts.fraud)),
        "stripe_submissions": some(facts.submissions),
        "refunds": some(facts.refunds),
        "journals": some(facts.journals),
        "merchant_notifications": some(facts.notifications),
        "stripe_webhooks": some(facts.stripe_events),
        "change_events": some(facts.changes),
        "internal_messages": some(facts.messages),
        "pending_entry": None if facts.pending is None else _plain(asdict(facts.pending)),
        "stripe_payment_intent": None if facts.intent is None else _plain(asdict(facts.intent)),
    }


def build_trace(facts: TraceFacts) -> Trace:
    """The payment's story from its facts."""
    waits = waiting_for(facts)
    return Trace(
        payment_id=facts.payment.id,
        status=facts.payment.status,
        terminal=_status(facts.payment.status).is_terminal,
        start=facts.payment.created_at,
        timeline=timeline_of(facts),
        path=path_of(facts),
        where=where_now(facts, waits),
        waiting_for=waits,
    )
