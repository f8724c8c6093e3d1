"""Agents and tables through Faust's test_context, on the memory:// store (no broker)."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from typing import Any

import pytest
from faust import streams as faust_streams
from faust.types import EventT, StreamT

from paystream.settings import Settings
from streams.adapters.cdc import decode_change, id_key
from streams.adapters.tables import balance_amount, writing_for
from streams.agents.ledger import Ledger
from streams.agents.pending import Pending
from streams.agents.poller import FRAUD_STALL_SECONDS, Poller
from streams.agents.submit import Submit
from streams.bootstrap import bare_worker
from streams.errors import DecodeError
from streams.messages import BalanceDelta, FraudCheck, PendingCommand

settings = dataclasses.replace(Settings.from_env(), faust_store="memory://")
# The parts under test, installed on a worker of their own (nothing else runs).
worker = bare_worker(settings)
app = worker.app
tables = worker.tables
ledger = Ledger(worker)
pending = Pending(worker)
probe_channel = app.channel()
results: list[Any] = []


class SentChecks:
    """The fraud stages as the poller sees them: where a check is sent."""

    def __init__(self) -> None:
        self.sent: list[FraudCheck] = []

    async def send_check(self, check: FraudCheck) -> None:
        self.sent.append(check)


async def probe(stream: StreamT) -> None:
    """Runs the test's function inside stream iteration, where tables may be written."""
    async for event in stream.events():
        fn = event.value
        results.append(await fn(event) if callable(fn) else None)


probe_agent = app.agent(probe_channel)(probe)


@pytest.fixture(scope="module", autouse=True)
def memory_app() -> None:
    app.finalize()
    app.flow_control.resume()


async def run(fn: Any) -> Any:
    async with probe_agent.test_context() as agent:
        await agent.put(fn)
    return results[-1]


async def test_velocity_counts_a_redelivered_payment_once() -> None:
    now_ms = int(time.time() * 1000)

    async def add(_: EventT) -> list[tuple[int, dict[str, int]]]:
        by_customer = tables.customer_velocity
        return [
            tables.observe(by_customer, "customer", "c_v", "pay_a", now_ms, 300, "usd"),
            tables.observe(by_customer, "customer", "c_v", "pay_a", now_ms, 300, "usd"),
            tables.observe(by_customer, "customer", "c_v", "pay_b", now_ms, 200, "eur"),
            tables.velocity(by_customer, "c_v", now_ms),
        ]

    first, again, other, window = await run(add)
    # What the window holds besides the payment observed: never the payment itself.
    assert first == (0, {}) and again == (0, {"usd": 0})
    assert other == (1, {"usd": 300})
    assert window == (2, {"usd": 300, "eur": 200})


async def test_velocity_forgets_payments_older_than_the_window() -> None:
    now_ms = int(time.time() * 1000)
    window_ms = settings.fraud.velocity_window_seconds * 1000

    async def add(_: EventT) -> tuple[int, dict[str, int]]:
        tables.observe(tables.customer_velocity, "customer", "c_old", "pay_old",
                now_ms - 2 * window_ms, 100, "usd")
        tables.observe(tables.customer_velocity, "customer", "c_old", "pay_new", now_ms, 100, "usd")
        return tables.velocity(tables.customer_velocity, "c_old", now_ms)

    assert await run(add) == (1, {"usd": 100})


async def test_velocity_window_spans_the_previous_period() -> None:
    # A key's buckets are stored per window-length period; a payment early in a
    # period must still see the rest of its window in the period before.
    window_ms = settings.fraud.velocity_window_seconds * 1000
    period_ms = int(time.time() * 1000) // window_ms * window_ms
    oldest_bucket_ms = period_ms - window_ms + tables.bucket_ms

    async def add(_: EventT) -> tuple[tuple[int, dict[str, int]], int]:
        tables.observe(tables.customer_velocity, "customer", "c_span", "pay_out",
                oldest_bucket_ms - 1, 1, "usd")
        tables.observe(tables.customer_velocity, "customer", "c_span", "pay_in",
                oldest_bucket_ms, 10, "usd")
        tables.observe(tables.customer_velocity, "customer", "c_span", "pay_late",
                period_ms - 1, 100, "usd")
        seen = tables.observe(tables.customer_velocity, "customer", "c_span", "pay_now",
                       period_ms, 1000, "usd")
        stored = [k for k in tables.customer_velocity.table.data.keys() if k[0] == "c_span"]
        return seen, len(stored)

    seen, stored = await run(add)
    assert seen == (2, {"usd": 110})
    assert stored == 2  # one value per period, however many buckets and payments


async def test_balances_apply_each_journal_entry_once() -> None:
    account = "merchant_available:m:usd"
    delta = BalanceDelta(account, "usd", {"jrn_payment_pay_x": -1050, "jrn_payment_pay_y": -5})
    async with ledger.balance_agent.test_context() as agent:
        await agent.put(delta.dumps())
        await agent.put(delta.dumps())  # redelivered
        # A later batch repeating one journal (a replayed change) beside a new one.
        await agent.put(BalanceDelta(account, "usd", {"jrn_payment_pay_y": -5,
                                                      "jrn_refund_re_x": 50}).dumps())
        # One entry per message, as workers before the batching sent them.
        await agent.put(json.dumps({"journal_id": "jrn_refund_re_z", "account": account,
                                    "amount": 5, "currency": "usd"}).encode())
    # Deltas without sources (journals posted before origins were stored): markers.
    assert balance_amount(tables.balances[account]) == -1000
    assert tables.balance_applied.get("jrn_payment_pay_x|merchant_available:m:usd") is True


def test_a_balance_delta_with_amounts_that_are_not_integers_is_refused() -> None:
    with pytest.raises(DecodeError):
        BalanceDelta.loads(b'{"account": "a", "currency": "usd", "amounts": {"j": 1.5}}')


def change(op: str, status: str | None, before: str | None = None) -> bytes:
    def image(s: str | None) -> dict[str, Any] | None:
        return None if s is None else {
            "id": "pay_p", "merchant_id": "acct_1", "status": s, "amount": 1, "currency": "usd",
            "stripe_payment_intent_id": "pi_1" if s != "pending" else None}
    return json.dumps({"op": op, "before": image(before), "after": image(status),
                       "source": {"ts_ms": 1}}).encode()


async def test_pending_table_follows_the_change_stream_and_the_pollers_commands() -> None:
    def on(topic: str, key: bytes, value: bytes) -> Any:
        async def apply(event: EventT) -> Any:
            # test_context names no topic; the pending agent dispatches on it.
            event.message.topic = topic
            event.key, event.value = key, value
            if topic == worker.topics.pending_commands.get_topic_name():
                await pending.apply_command(event)
            else:  # a change event, as the changes agent hands it over
                decoded = decode_change(key, value)
                assert decoded is not None
                await pending.track([(event, decoded)])
            return tables.pending.get("pay_p")
        return apply

    key = id_key("pay_p")
    entry = await run(on(settings.payments_topic, key, change("c", "pending")))
    assert entry["status"] == "pending" and entry["attempts"] == 0 and entry["kind"] == "payment"
    assert entry["next_poll_at"] > time.time()

    entry = await run(on(settings.payments_topic, key,
                         change("u", "requires_action", before="pending")))
    assert entry["status"] == "requires_action" and entry["stripe_id"] == "pi_1"

    command = PendingCommand(id="pay_p", attempts=3, next_poll_at=42.0, last_error="503")
    entry = await run(on(worker.topics.pending_commands.get_topic_name(), key,
                         command.dumps()))
    assert (entry["attempts"], entry["next_poll_at"], entry["last_error"]) == (3, 42.0, "503")

    gone = await run(on(settings.payments_topic, key,
                        change("u", "succeeded", before="requires_action")))
    assert gone is None


async def test_a_batch_handler_writes_tables_as_each_events_own() -> None:
    """Faust takes a table write's partition from the current event; in a batch that
    is the batch's last, so writing_for makes each event current in turn."""

    async def check(event: EventT) -> Any:
        other = copy.copy(event)
        with writing_for(other):
            inside = faust_streams.current_event()
        return inside is other, faust_streams.current_event() is event

    assert await run(check) == (True, True)


def _undecided_row(age_seconds: float) -> dict[str, Any]:
    from datetime import datetime, timedelta, timezone

    return {"id": "pay_stalled", "merchant_id": "acct_x", "amount": 700, "currency": "usd",
            "status": "pending", "customer": "cus_x", "payment_method": "pm_card_visa",
            "metadata": {}, "amount_refunded": 0, "stripe_payment_intent_id": None,
            "failure_code": None, "failure_message": None, "approved": None,
            "created_at": datetime.now(timezone.utc) - timedelta(seconds=age_seconds)}


async def test_poller_resends_the_fraud_check_of_a_payment_stuck_undecided() -> None:
    fraud = SentChecks()
    poller = Poller(worker, fraud, Submit(worker))
    # Just committed: the fraud stages are at work; nothing is sent.
    assert await poller._poll_payment(_undecided_row(1), 2) == ("awaiting_fraud", None)
    assert fraud.sent == []
    # Undecided long after its commit: its check was lost, so it goes again.
    assert await poller._poll_payment(
        _undecided_row(FRAUD_STALL_SECONDS + 5), 2) == ("fraud_restarted", None)
    assert [(c.payment_id, c.partition, c.amount, c.customer) for c in fraud.sent] == [
        ("pay_stalled", 2, 700, "cus_x")]


async def test_a_journal_with_an_origin_is_applied_once_without_a_marker() -> None:
    account = "merchant_available:m_origin:usd"
    first = BalanceDelta(account, "usd", {"jrn_payment_pay_o1": -1000, "jrn_payment_pay_o2": -20},
                         {"jrn_payment_pay_o1": ["t.payments:3", 40],
                          "jrn_payment_pay_o2": ["t.payments:3", 41]})
    async with ledger.balance_agent.test_context() as agent:
        await agent.put(first.dumps())
        await agent.put(first.dumps())  # the delta redelivered
        # The same journal again from a re-emitted change: the ledger found it posted
        # and sends the origin it stored (41), not the new event's offset.
        await agent.put(BalanceDelta(account, "usd", {"jrn_payment_pay_o2": -20},
                                     {"jrn_payment_pay_o2": ["t.payments:3", 41]}).dumps())
        # Marks are per source partition: a lower offset of another partition is new.
        await agent.put(BalanceDelta(account, "usd", {"jrn_refund_re_o3": 300},
                                     {"jrn_refund_re_o3": ["t.refunds:0", 5]}).dumps())
        await agent.put(BalanceDelta(account, "usd", {"jrn_payment_pay_o4": -7},
                                     {"jrn_payment_pay_o4": ["t.payments:1", 2]}).dumps())
    assert tables.balances[account] == {
        "amount": -727, "applied": {"t.payments:3": 41, "t.refunds:0": 5, "t.payments:1": 2}}
    # Recorded in the balance's own value: no marker per journal and account.
    assert not [k for k in tables.balance_applied.data.keys() if "_o" in k.split("|")[0]]


async def test_a_journal_without_an_origin_beside_one_with_each_applies_once() -> None:
    account = "merchant_available:m_mixed:usd"
    delta = BalanceDelta(account, "usd", {"jrn_payment_pay_old": -5, "jrn_payment_pay_new": -6},
                         {"jrn_payment_pay_new": ["t.payments:0", 9]})
    async with ledger.balance_agent.test_context() as agent:
        await agent.put(delta.dumps())
        await agent.put(delta.dumps())
    assert tables.balances[account] == {"amount": -11, "applied": {"t.payments:0": 9}}
    assert tables.balance_applied.get(f"jrn_payment_pay_old|{account}") is True


def test_a_delta_with_a_malformed_source_is_refused() -> None:
    with pytest.raises(DecodeError, match="sources"):
        BalanceDelta.loads(json.dumps({"account": "a", "currency": "usd",
                                       "amounts": {"j": 1}, "sources": {"j": ["p:0", -1]}}))


async def test_a_balance_an_older_worker_wrote_as_an_integer_still_adds_up() -> None:
    account = "merchant_available:m_dev:usd"
    tables.balances.data[account] = -100
    async with ledger.balance_agent.test_context() as agent:
        await agent.put(BalanceDelta(account, "usd", {"jrn_payment_pay_dev": -5},
                                     {"jrn_payment_pay_dev": ["t:0", 3]}).dumps())
    assert tables.balances[account] == {"amount": -105, "applied": {"t:0": 3}}
