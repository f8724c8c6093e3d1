"""Faust tables (RocksDB, changelog-backed): pending objects, velocity windows, balances."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust import streams as faust_streams
from faust.serializers import codecs
from faust.types import EventT
from faust.types.tables import TableT, WindowWrapperT
from faust.types.windows import WindowRange

from paystream.settings import Settings
from streams.adapters.cdc import id_key


class _CdcIdKey(codecs.Codec):
    """Table keys serialized as Debezium's own key bytes, ``{"id":"pay_..."}``.

    The table's changelog then hashes an id to the partition the CDC topic
    uses for it, so ``@app.table_route`` sends a request for an id to the
    worker that really owns it.
    """

    def _dumps(self, obj: Any) -> bytes:
        return id_key(str(obj))

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)["id"]


_CDC_ID_CODEC = "paystream_cdc_id"


class CheckedTable(faust.Table[Any, Any]):
    """Faust's table, whose check that a source topic and the changelog have as many
    partitions waits while either count is unknown.

    Faust runs that check on a table's first write from each source topic and reads
    both counts from the consumer's metadata snapshot, which holds 0 for a topic its
    last metadata did not describe (a topic created after it, as a fresh app's are).
    Faust compares that 0 like a real count and raises PartitionsMismatch, so the
    first write is dead-lettered: seen as a Faust balance that missed a delta (the
    first one without an origin, the first write to `balance-applied`), more often
    on replication-factor-3 topics. No topic has 0 partitions: the check is left
    for a later write, once the metadata knows both, and a real mismatch still raises.
    """

    def _verify_source_topic_partitions(self, source_topic: str) -> None:
        # Faust calls this on every table write: once checked, return before any lookup.
        if source_topic in self._verified_source_topics_for_partitions:
            return
        counts = self.app.consumer.topic_partitions
        if counts(source_topic) == 0 or counts(self.changelog_topic_name) == 0:
            return
        super()._verify_source_topic_partitions(source_topic)


class _IdKeyedTable(CheckedTable):
    """A table whose keys (and changelog keys) are ``{"id":...}`` bytes, see _CdcIdKey."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        # Faust derives the key serializer from key_type alone; set ours before the
        # changelog topic (made in tables.add) and the store (made lazily) read it.
        self.key_serializer = _CDC_ID_CODEC


_JSON: faust.Schema[Any, Any] = faust.Schema(key_serializer="json", value_serializer="json")
# Velocity per customer and per payment method: a sliding window of
# VELOCITY_BUCKETS buckets ({"n": count, "amt": {currency: minor units}}), so a hot
# key (every payment with pm_card_visa) costs a few small values per payment, not a
# list of every payment in the window. The window slides by one bucket (5 s for the
# default 60 s window).
# The buckets of a key are stored together, one table value per key and
# window-length period ({bucket start ms: bucket}, tumbling by the window): a
# window spans at most its own period and the one before, so a stage reads 2
# values and writes 1 per payment (a value per bucket would cost one read per
# bucket of the window).
# Payment ids stay out of these values (a hot key's would grow with its traffic),
# hence the separate velocity-seen marker. Periods expire with the table's
# window, so keys that go quiet do not stay forever. Keys arrive on topics keyed
# by their JSON form, the bytes table_route hashes.
VELOCITY_BUCKETS = 12


class Tables:
    """The worker's tables, declared on its app for its settings, and the velocity
    window arithmetic over them."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        codecs.register(_CDC_ID_CODEC, _CdcIdKey())
        partitions = settings.topic_partitions
        window = settings.fraud.velocity_window_seconds
        self.window_ms = window * 1000
        self.bucket_ms = max(1000, self.window_ms // VELOCITY_BUCKETS)
        # Every non-terminal payment and refund, keyed by id, owned by the worker that
        # owns the id's CDC partition. Value: see agents/pending.new_entry().
        self.pending = _IdKeyedTable(
            app, name="pending", default=None, partitions=partitions,
            beacon=app.tables.beacon, help="Non-terminal payments and refunds",
        )
        app.tables.add(self.pending)  # returns the table typed as a bare CollectionT
        self.customer_velocity = app.Table(
            "velocity-customer", default=dict, partitions=partitions, schema=_JSON,
            help="Payments per customer per velocity bucket, grouped by window-length period",
        ).tumbling(window, expires=2 * window)
        self.method_velocity = app.Table(
            "velocity-method", default=dict, partitions=partitions, schema=_JSON,
            help="Payments per payment method per velocity bucket, grouped by window-length "
                 "period",
        ).tumbling(window, expires=2 * window)
        # Payments already counted, per (kind, key, payment): a redelivered payment
        # must not count twice. Same partition as the key it marks.
        self.velocity_seen = app.Table(
            "velocity-seen", default=None, partitions=partitions, schema=_JSON,
            help="Payments already counted in a velocity window",
        ).tumbling(window, expires=2 * window)
        # Ledger balances per account, see Balance. Journals posted before their
        # origin was stored are recognised by a marker per (journal, account) instead.
        self.balances = app.Table("balances", default=int, partitions=partitions,
                                  schema=_JSON, help="Balance per ledger account")
        self.balance_applied = app.Table("balance-applied", default=None,
                                         partitions=partitions, schema=_JSON,
                                         help="Journal entries in balances, for journals "
                                              "posted without an origin")

    def local_pending_entries(self) -> list[dict[str, Any]]:
        """The pending entries of the partitions this worker owns (RocksDB iterates
        only active partitions)."""
        return [entry for entry in self.pending.values() if entry]

    def _period(self, table: TableT[Any, Any], key: str, start_ms: int) -> Any:
        """The table key of key's period holding the bucket that starts at start_ms."""
        return (key, _window_range(table, (start_ms - start_ms % self.window_ms) / 1000))

    def _window(self, table: TableT[Any, Any], key: str,
                at_ms: int) -> tuple[int, dict[str, int], Any, dict[str, Any]]:
        """(payments, {currency: amount}) of key in the window ending with at_ms's bucket,
        plus the key and value of the period holding that bucket (where a payment goes)."""
        bucket = at_ms - at_ms % self.bucket_ms
        current_key = self._period(table, key, bucket)
        current = lookup(table, current_key) or {}
        # The oldest bucket in the window may lie in the previous period, never further.
        previous = lookup(table, self._period(table, key, bucket - self.window_ms)) or {}
        count = 0
        amounts: dict[str, int] = {}
        for period in (current, previous):
            for start, counted in period.items():
                # Buckets newer than at_ms's are left out, as they would be had it come
                # in order.
                if bucket - self.window_ms < int(start) <= bucket:
                    count += int(counted.get("n", 0))
                    for cur, amount in (counted.get("amt") or {}).items():
                        amounts[cur] = amounts.get(cur, 0) + int(amount)
        return count, amounts, current_key, current

    def velocity(self, windowed: WindowWrapperT, key: str,
                 at_ms: int) -> tuple[int, dict[str, int]]:
        """(payments, {currency: amount}) for key in the window ending at at_ms."""
        count, amounts, _, _ = self._window(windowed.table, key, at_ms)
        return count, amounts

    def observe(self, windowed: WindowWrapperT, kind: str, key: str, payment_id: str,
                at_ms: int, amount: int, currency: str) -> tuple[int, dict[str, int]]:
        """Count a payment in key's window (once, however often it is redelivered) and
        return what the window holds besides it: (payments, {currency: amount})."""
        table = windowed.table
        seen = self.velocity_seen.table
        marker = (f"{kind}|{key}|{payment_id}", _window_range(seen, at_ms / 1000))
        count, amounts, period_key, period = self._window(table, key, at_ms)
        if lookup(seen, marker):
            # A redelivery: the window holds this payment already; leave it out.
            amounts[currency] = amounts.get(currency, 0) - amount
            return count - 1, amounts
        bucket = str(at_ms - at_ms % self.bucket_ms)  # JSON object keys are strings
        counted = period.get(bucket) or {}
        bucket_amounts = dict(counted.get("amt") or {})
        bucket_amounts[currency] = int(bucket_amounts.get(currency, 0)) + amount
        table[period_key] = {**period, bucket: {"n": int(counted.get("n", 0)) + 1,
                                                "amt": bucket_amounts}}
        seen[marker] = True
        return count, amounts


@dataclass(frozen=True, slots=True)
class Balance:
    """A balances table value: an account's balance (minor units, debit +, credit -)
    and, in the same value, the highest change-event offset applied per source
    partition ({"topic:partition": offset}). Applying and recording are one table
    write, so a crash can neither lose an amount nor keep a record of one it lost.
    Older values are a bare integer."""

    amount: int
    applied: Mapping[str, int]

    @classmethod
    def of(cls, value: Any) -> Balance:
        if isinstance(value, Mapping):
            return cls(int(value["amount"]), dict(value.get("applied") or {}))
        return cls(int(value or 0), {})

    def value(self) -> dict[str, Any]:
        return {"amount": self.amount, "applied": dict(self.applied)}


def balance_amount(value: Any) -> int:
    """A balances table value in minor units (a Balance, or a bare integer)."""
    return Balance.of(value).amount


def json_key(value: str) -> bytes:
    """The key bytes of a topic feeding a JSON-keyed table (what table_route hashes):
    the bytes Faust's "json" serializer makes of the table's key, which is orjson's
    (UTF-8, not ASCII escapes) once orjson is installed, as it is here."""
    return orjson.dumps(value)


@contextmanager
def writing_for(event: EventT[Any]) -> Iterator[None]:
    """Table writes in the block go to event's partition (store and changelog).

    Faust takes the partition of a table write from the stream's current event,
    which in a batch (take_events) is the batch's last one: a batch agent that
    writes a table sets each event as current while it handles it. (Faust keeps
    that event in a context variable of faust.streams, as its own stream does.)
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


def lookup(table: Any, key: Any) -> Any:
    """key's value or None, in one store read.

    ``table[key]`` and ``table.get`` read twice (a membership test, then the
    value), and velocity reads 6 keys per payment.
    """
    return table.data.get(key)


def _window_range(table: TableT[Any, Any], timestamp: float) -> WindowRange:
    """The range of table's window that holds timestamp (seconds)."""
    # Faust types every table's window as optional; .tumbling() set these.
    assert table.window is not None, f"{table.name} is not windowed"
    return table.window.current(timestamp)
