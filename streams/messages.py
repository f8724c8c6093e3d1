"""The JSON messages agents pass to each other on internal topics, and outbox notifications."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from streams.errors import DecodeError
from streams.rows import json_object, loads_json


@dataclass(frozen=True, slots=True)
class Notification:
    """A merchant event for the outbox, built once from the change that caused it."""

    event_id: str
    merchant_id: str
    event_type: str
    object_id: str
    payload: str


# --- messages between our own agents (JSON on internal topics) -------------------

M = TypeVar("M", bound="Message")


@dataclass(frozen=True, slots=True)
class Message:
    """Base of the internal messages: JSON bytes in, JSON bytes out."""

    def dumps(self) -> bytes:
        # orjson writes a dataclass directly (no asdict copy), compact, UTF-8.
        return orjson.dumps(self)

    @classmethod
    def loads(cls: type[M], raw: bytes | str | Mapping[str, Any]) -> M:
        data = raw if isinstance(raw, Mapping) else json_object(loads_json(raw, "value"), "value")
        try:
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except TypeError as err:
            raise DecodeError(f"not a {cls.__name__}: {err}") from None


@dataclass(frozen=True, slots=True)
class FraudCheck(Message):
    """A new payment on its way through the velocity stages (customer, then method)."""

    payment_id: str
    merchant_id: str
    customer: str
    payment_method: str
    amount: int
    currency: str
    created_ms: int
    # The payments CDC partition, so later stages can address the payment's owner.
    partition: int
    source_ts_ms: int | None = None
    customer_count: int = 0
    customer_amount: int = 0


@dataclass(frozen=True, slots=True)
class Verdict(Message):
    """A fraud decision for one payment, on its way to be stored and acted on."""

    payment_id: str
    partition: int
    approved: bool
    score: int
    rules_hit: list[str]
    velocity: dict[str, int] = field(default_factory=dict)
    source_ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PendingCommand(Message):
    """The poller's instruction to the pending table's owner: when to look next."""

    id: str
    attempts: int
    next_poll_at: float
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class BalanceDelta(Message):
    """A ledger batch's entries on one account, sent to the partition that owns its
    balance: {journal id: signed amount}, each journal applied once.

    One message per account per batch, not one per entry: the balances agent's
    deliveries and balance writes are per message. ``sources`` names where each
    journal came from, {journal id: ["topic:partition", offset]}: the change event
    that first posted it, as the ledger stored it. The balance keeps the highest
    offset it applied per source partition, so a journal that comes again (its change
    redelivered, or re-emitted at a new offset) is recognised without a marker per
    journal. A journal without a source (posted before origins were stored, or sent
    by an older worker) is recognised by its marker.
    """

    account: str
    currency: str
    amounts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def loads(cls, raw: bytes | str | Mapping[str, Any]) -> BalanceDelta:
        data = raw if isinstance(raw, Mapping) else json_object(loads_json(raw, "value"), "value")
        if "amounts" not in data and "journal_id" in data:
            # One entry per message, as workers before the batching sent them.
            data = {**data, "amounts": {data["journal_id"]: data.get("amount")}}
        delta = super(BalanceDelta, cls).loads(data)
        if not isinstance(delta.amounts, dict) or not all(
                isinstance(k, str) and type(v) is int for k, v in delta.amounts.items()):
            raise DecodeError(f"amounts must map journal ids to integers: {delta.amounts!r}",
                              field="amounts")
        if not isinstance(delta.sources, dict) or not all(
                isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                and type(v[1]) is int and v[1] >= 0 for v in delta.sources.values()):
            raise DecodeError("sources must map journal ids to [\"topic:partition\", offset]: "
                              f"{delta.sources!r}", field="sources")
        return delta
