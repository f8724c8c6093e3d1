"""Faust tables (RocksDB, changelog-backed): pending objects, velocity windows, balances."""

from __future__ import annotations

import json
from typing import Any

import faust
from faust.serializers import codecs
from faust.types.tables import TableT, WindowWrapperT
from faust.types.windows import WindowRange

from streams.adapters.cdc import id_key
from streams.app import app, settings


class _CdcIdKey(codecs.Codec):
    """Table keys serialized as Debezium's own key bytes, ``{"id":"pay_..."}``.

    The table's changelog then hashes an id to the partition the CDC topic
    uses for it, so ``@app.table_route`` sends a request for an id to the
    worker that really owns it.
    """

    def _dumps(self, obj: Any) -> bytes:
        return id_key(str(obj))

    def _loads(self, s: bytes) -> Any:
        return json.loads(s)["id"]


codecs.register("paystream_cdc_id", _CdcIdKey())

_PARTITIONS = settings.topic_partitions
_JSON: faust.Schema[Any, Any] = faust.Schema(key_serializer="json", value_serializer="json")
_WINDOW = settings.fraud.velocity_window_seconds

# Every non-terminal payment and refund, keyed by id, owned by the worker that
# owns the id's CDC partition. Value: see agents/pending.new_entry().


class _IdKeyedTable(faust.Table[Any, Any]):
    """A table whose keys (and changelog keys) are ``{"id":...}`` bytes, see _CdcIdKey."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        # Faust derives the key serializer from key_type alone; set ours before the
        # changelog topic (made in tables.add) and the store (made lazily) read it.
        self.key_serializer = "paystream_cdc_id"


pending = _IdKeyedTable(
    app, name="pending", default=None, partitions=_PARTITIONS, beacon=app.tables.beacon,
    help="Non-terminal payments and refunds",
)
app.tables.add(pending)  # returns the table typed as a bare CollectionT: keep ours

# Velocity per customer and per payment method: a sliding window of
# VELOCITY_BUCKETS buckets ({"n": count, "amt": {currency: minor units}}), so a hot
# key (every payment with pm_card_visa) costs a few small values per payment, not a
# list of every payment in the window. The window slides by one bucket (5 s for the
# default 60 s window).
# The buckets of a key are stored together, one table value per key and
# window-length period ({bucket start ms: bucket}, tumbling by the window): a
# window spans at most its own period and the one before, so a stage reads 2
# values and writes 1 per payment (a value per bucket would cost one read per
# bucket of the window: 13 for the default).
# Payment ids stay out of these values (a hot key's would grow with its traffic),
# hence the separate velocity-seen marker below. Periods expire with the table's
# window, so keys that go quiet do not stay forever. Keys arrive on topics keyed
# by their JSON form, the bytes table_route hashes.
VELOCITY_BUCKETS = 12
_WINDOW_MS = _WINDOW * 1000
VELOCITY_BUCKET_MS = max(1000, _WINDOW_MS // VELOCITY_BUCKETS)
customer_velocity = app.Table(
    "velocity-customer", default=dict, partitions=_PARTITIONS, schema=_JSON,
    help="Payments per customer per velocity bucket, grouped by window-length period",
).tumbling(_WINDOW, expires=2 * _WINDOW)
method_velocity = app.Table(
    "velocity-method", default=dict, partitions=_PARTITIONS, schema=_JSON,
    help="Payments per payment method per velocity bucket, grouped by window-length period",
).tumbling(_WINDOW, expires=2 * _WINDOW)
# Payments already counted, per (kind, key, payment): a redelivered payment
# must not count twice. Same partition as the key it marks.
velocity_seen = app.Table(
    "velocity-seen", default=None, partitions=_PARTITIONS, schema=_JSON,
    help="Payments already counted in a velocity window",
).tumbling(_WINDOW, expires=2 * _WINDOW)

# Ledger balances per account (minor units, debit +, credit -), and the
# (journal, account) pairs already applied, so a redelivered entry adds nothing.
balances = app.Table("balances", default=int, partitions=_PARTITIONS, schema=_JSON,
                     help="Balance per ledger account")
balance_applied = app.Table("balance-applied", default=None, partitions=_PARTITIONS,
                            schema=_JSON, help="Journal entries already in balances")


def json_key(value: str) -> bytes:
    """The key bytes of a topic feeding a JSON-keyed table (what table_route hashes)."""
    return json.dumps(value).encode()


def lookup(table: Any, key: Any) -> Any:
    """key's value or None, in one store read.

    ``table[key]`` and ``table.get`` read twice (a membership test, then the
    value), and velocity reads 6 keys per payment.
    """
    return table.data.get(key)


def _window_range(table: TableT[Any, Any], timestamp: float) -> WindowRange:
    """The range of table's window that holds timestamp (seconds)."""
    # Faust types every table's window as optional; .tumbling() above set these.
    assert table.window is not None, f"{table.name} is not windowed"
    return table.window.current(timestamp)


def _period(table: TableT[Any, Any], key: str, start_ms: int) -> Any:
    """The table key of key's period holding the bucket that starts at start_ms."""
    return (key, _window_range(table, (start_ms - start_ms % _WINDOW_MS) / 1000))


def _window(table: TableT[Any, Any], key: str,
            at_ms: int) -> tuple[int, dict[str, int], Any, dict[str, Any]]:
    """(payments, {currency: amount}) of key in the window ending with at_ms's bucket,
    plus the key and value of the period holding that bucket (where a payment goes)."""
    bucket = at_ms - at_ms % VELOCITY_BUCKET_MS
    current_key = _period(table, key, bucket)
    current = lookup(table, current_key) or {}
    # The oldest bucket in the window may lie in the previous period, never further.
    previous = lookup(table, _period(table, key, bucket - _WINDOW_MS)) or {}
    count = 0
    amounts: dict[str, int] = {}
    for period in (current, previous):
        for start, counted in period.items():
            # Buckets newer than at_ms's are left out, as they would be had it come in order.
            if bucket - _WINDOW_MS < int(start) <= bucket:
                count += int(counted.get("n", 0))
                for cur, amount in (counted.get("amt") or {}).items():
                    amounts[cur] = amounts.get(cur, 0) + int(amount)
    return count, amounts, current_key, current


def velocity(windowed: WindowWrapperT, key: str, at_ms: int) -> tuple[int, dict[str, int]]:
    """(payments, {currency: amount}) for key in the window ending at at_ms."""
    count, amounts, _, _ = _window(windowed.table, key, at_ms)
    return count, amounts


def observe(windowed: WindowWrapperT, kind: str, key: str, payment_id: str, at_ms: int,
            amount: int, currency: str) -> tuple[int, dict[str, int]]:
    """Count a payment in key's window (once, however often it is redelivered) and
    return what the window holds besides it: (payments, {currency: amount})."""
    table = windowed.table
    seen = velocity_seen.table
    marker = (f"{kind}|{key}|{payment_id}", _window_range(seen, at_ms / 1000))
    count, amounts, period_key, period = _window(table, key, at_ms)
    if lookup(seen, marker):
        # A redelivery: the window holds this payment already; leave it out.
        amounts[currency] = amounts.get(currency, 0) - amount
        return count - 1, amounts
    bucket = str(at_ms - at_ms % VELOCITY_BUCKET_MS)  # JSON object keys are strings
    counted = period.get(bucket) or {}
    bucket_amounts = dict(counted.get("amt") or {})
    bucket_amounts[currency] = int(bucket_amounts.get(currency, 0)) + amount
    table[period_key] = {**period, bucket: {"n": int(counted.get("n", 0)) + 1,
                                            "amt": bucket_amounts}}
    seen[marker] = True
    return count, amounts


def local_pending_entries() -> list[dict[str, Any]]:
    """The pending entries of the partitions this worker owns (RocksDB iterates
    only active partitions)."""
    return [entry for entry in pending.values() if entry]
