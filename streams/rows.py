"""Rows of ``payments`` and ``refunds`` as the agents use them, validated field by field.

The field readers raise ``DecodeError`` naming the field: a malformed change
event is dead-lettered with the reason, never half-applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

from paystream.domain import (
    PaymentStatus,
    RefundStatus,
    ValidationError,
    currency,
    payment_object,
    refund_object,
)
from streams.errors import DecodeError


def loads_json(raw: bytes | str, what: str) -> Any:
    # orjson: every change event and internal message is decoded here, and it
    # parses several times faster than the standard library.
    try:
        return orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise DecodeError(f"{what} is not JSON: {err}", field=what) from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a JSON object, got {type(value).__name__}", field=what)
    return value


def text(row: Mapping[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = row.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise DecodeError(f"{name} must be a non-empty string, got {value!r}", field=name)
    return value


def integer(row: Mapping[str, Any], name: str) -> int:
    value = row.get(name)
    # bool is an int subclass and JSON floats decode as float: both are corrupt money.
    if type(value) is not int:
        raise DecodeError(f"{name} must be an integer, got {value!r}", field=name)
    return value


def currency_code(row: Mapping[str, Any]) -> str:
    try:
        return currency(row.get("currency")).code
    except ValidationError as err:
        raise DecodeError(err.message, field="currency") from None


def timestamp(row: Mapping[str, Any], name: str) -> datetime:
    value = row.get(name)
    try:
        # Debezium renders timestamptz as ISO 8601 with a trailing Z.
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise DecodeError(f"{name} is not an ISO timestamp: {value!r}", field=name) from None


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
            metadata = loads_json(metadata, "metadata")
        return cls(
            id=text(row, "id") or "",
            merchant_id=text(row, "merchant_id") or "",
            amount=integer(row, "amount"),
            currency=currency_code(row),
            status=status,
            customer=text(row, "customer") or "",
            payment_method=text(row, "payment_method") or "",
            description=row.get("description"),
            metadata=json_object(metadata, "metadata"),
            amount_refunded=integer(row, "amount_refunded") if "amount_refunded" in row else 0,
            stripe_payment_intent_id=text(row, "stripe_payment_intent_id", optional=True),
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
            id=text(row, "id") or "",
            payment_id=text(row, "payment_id") or "",
            merchant_id=text(row, "merchant_id") or "",
            amount=integer(row, "amount"),
            currency=currency_code(row),
            status=status,
            stripe_refund_id=text(row, "stripe_refund_id", optional=True),
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
    return timestamp(row, "created_at")
