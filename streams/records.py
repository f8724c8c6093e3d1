"""Decoding Debezium change events, and the JSON messages agents pass to each other."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from paystream.domain import (
    PaymentStatus,
    RefundStatus,
    ValidationError,
    currency,
    payment_object,
    refund_object,
)

from .errors import DecodeError

Op = Literal["c", "u", "d", "r"]
_OPS = frozenset({"c", "u", "d", "r"})


def id_key(object_id: str) -> bytes:
    """The Kafka key Debezium's JsonConverter writes for a row: ``{"id":"..."}``, no spaces.

    Internal topics keyed by a payment id use the very same bytes, so the
    producer's murmur2 partitioner puts them on the partition of the CDC topic
    that holds the payment (co-partitioning for the pending table).
    """
    return json.dumps({"id": object_id}, separators=(",", ":")).encode()


def _loads(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise DecodeError(f"{what} is not JSON: {err}", field=what) from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a JSON object, got {type(value).__name__}", field=what)
    return value


def _str(row: Mapping[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = row.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise DecodeError(f"{name} must be a non-empty string, got {value!r}", field=name)
    return value


def _int(row: Mapping[str, Any], name: str) -> int:
    value = row.get(name)
    # bool is an int subclass and JSON floats decode as float: both are corrupt money.
    if type(value) is not int:
        raise DecodeError(f"{name} must be an integer, got {value!r}", field=name)
    return value


def _currency(row: Mapping[str, Any]) -> str:
    try:
        return currency(row.get("currency")).code
    except ValidationError as err:
        raise DecodeError(err.message, field="currency") from None


def _timestamp(row: Mapping[str, Any], name: str) -> datetime:
    value = row.get(name)
    try:
        # Debezium renders timestamptz as ISO 8601 with a trailing Z.
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise DecodeError(f"{name} is not an ISO timestamp: {value!r}", field=name) from None


@dataclass(frozen=True, slots=True)
class Change:
    """One Debezium change event for a row of ``payments`` or ``refunds``."""

    op: Op
    key_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    table: str
    lsn: int | None
    tx_id: int | None
    source_ts_ms: int | None
    snapshot: bool

    @property
    def row(self) -> dict[str, Any]:
        """The row as it is now (the before-image for a delete)."""
        row = self.after if self.after is not None else self.before
        assert row is not None  # decode_change guarantees one of them
        return row

    @property
    def old_status(self) -> str | None:
        return None if self.before is None else self.before.get("status")

    @property
    def new_status(self) -> str | None:
        return None if self.after is None else self.after.get("status")

    def entered(self, status: str) -> bool:
        """Whether this change moved the row into status (a create in it counts)."""
        if self.op == "d" or self.new_status != status:
            return False
        # Snapshot reads ("r") and inserts have no before-image: the row arrives in status.
        return self.before is None or self.old_status != status


def decode_change(key: bytes | None, value: bytes | None) -> Change | None:
    """The change in a CDC message, None for a tombstone; DecodeError if malformed."""
    if value is None:
        return None
    if key is None:
        raise DecodeError("change event without a key", field="key")
    key_obj = _object(_loads(key, "key"), "key")
    key_id = key_obj.get("id")
    if not isinstance(key_id, str) or not key_id:
        raise DecodeError(f"key has no string id: {key_obj!r}", field="key")
    envelope = _object(_loads(value, "value"), "value")
    # A converter with schemas.enable=true wraps the envelope in {"schema", "payload"}.
    if "payload" in envelope and "schema" in envelope:
        envelope = _object(envelope["payload"], "payload")
    op = envelope.get("op")
    if op not in _OPS:
        raise DecodeError(f"op must be one of c, u, d, r, got {op!r}", field="op")
    before = envelope.get("before")
    after = envelope.get("after")
    if before is not None:
        before = _object(before, "before")
    if after is not None:
        after = _object(after, "after")
    if op == "d" and before is None:
        raise DecodeError("delete without a before-image", field="before")
    if op != "d" and after is None:
        raise DecodeError(f"op {op} without an after-image", field="after")
    source = envelope.get("source") or {}
    if not isinstance(source, dict):
        raise DecodeError("source must be an object", field="source")
    row_id = (after or before or {}).get("id")
    if row_id != key_id:
        raise DecodeError(f"key id {key_id!r} does not match row id {row_id!r}", field="id")
    return Change(
        op=op,
        key_id=key_id,
        before=before,
        after=after,
        table=str(source.get("table", "")),
        lsn=source.get("lsn") if type(source.get("lsn")) is int else None,
        tx_id=source.get("txId") if type(source.get("txId")) is int else None,
        source_ts_ms=source.get("ts_ms") if type(source.get("ts_ms")) is int else None,
        # Debezium writes "true", "last", "first", "incremental" or "false".
        snapshot=str(source.get("snapshot", "false")) not in ("false", "None"),
    )


S = TypeVar("S", PaymentStatus, RefundStatus)


def _status(row: Mapping[str, Any], kind: type[S], what: str) -> S:
    try:
        return kind(str(row.get("status")))
    except ValueError:
        raise DecodeError(f"unknown {what} status {row.get('status')!r}",
                          field="status") from None


@dataclass(frozen=True, slots=True)
class PaymentRow:
    """The columns of a ``payments`` row that the agents use, validated."""

    id: str
    merchant_id: str
    amount: int
    currency: str
    status: PaymentStatus
    customer: str
    payment_method: str
    description: str | None
    metadata: dict[str, Any]
    amount_refunded: int
    stripe_payment_intent_id: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: datetime

    @classmethod
    def parse(cls, row: Mapping[str, Any]) -> PaymentRow:
        status = _status(row, PaymentStatus, "payment")
        metadata = row.get("metadata") or {}
        # Debezium sends jsonb as a JSON string; psycopg already decodes it to a dict.
        if isinstance(metadata, str):
            metadata = _loads(metadata, "metadata")
        return cls(
            id=_str(row, "id") or "",
            merchant_id=_str(row, "merchant_id") or "",
            amount=_int(row, "amount"),
            currency=_currency(row),
            status=status,
            customer=_str(row, "customer") or "",
            payment_method=_str(row, "payment_method") or "",
            description=row.get("description"),
            metadata=_object(metadata, "metadata"),
            amount_refunded=_int(row, "amount_refunded") if "amount_refunded" in row else 0,
            stripe_payment_intent_id=_str(row, "stripe_payment_intent_id", optional=True),
            failure_code=row.get("failure_code"),
            failure_message=row.get("failure_message"),
            created_at=_created(row),
        )

    def public(self) -> dict[str, Any]:
        """The payment as merchants see it in webhook payloads: the API's payment object."""
        return payment_object({**asdict(self), "status": self.status.value,
                               "created": int(self.created_at.timestamp())})


@dataclass(frozen=True, slots=True)
class RefundRow:
    """The columns of a ``refunds`` row that the agents use, validated."""

    id: str
    payment_id: str
    merchant_id: str
    amount: int
    currency: str
    status: RefundStatus
    stripe_refund_id: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: datetime

    @classmethod
    def parse(cls, row: Mapping[str, Any]) -> RefundRow:
        status = _status(row, RefundStatus, "refund")
        return cls(
            id=_str(row, "id") or "",
            payment_id=_str(row, "payment_id") or "",
            merchant_id=_str(row, "merchant_id") or "",
            amount=_int(row, "amount"),
            currency=_currency(row),
            status=status,
            stripe_refund_id=_str(row, "stripe_refund_id", optional=True),
            failure_code=row.get("failure_code"),
            failure_message=row.get("failure_message"),
            created_at=_created(row),
        )

    def public(self) -> dict[str, Any]:
        """The refund as merchants see it in webhook payloads: the API's refund object."""
        return refund_object({**asdict(self), "status": self.status.value,
                              "created": int(self.created_at.timestamp())})


def _created(row: Mapping[str, Any]) -> datetime:
    value = row.get("created_at")
    if isinstance(value, datetime):
        return value
    return _timestamp(row, "created_at")


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
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def loads(cls: type[M], raw: bytes | str | Mapping[str, Any]) -> M:
        data = raw if isinstance(raw, Mapping) else _object(_loads(raw, "value"), "value")
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
    """One ledger entry, sent to the partition that owns its account's balance."""

    journal_id: str
    account: str
    amount: int
    currency: str
