"""Payment and refund state machines, and the SQL guard generated from them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar, overload

from .errors import InvalidTransition, ValidationError


class PaymentStatus(StrEnum):
    """Where a payment stands; values are what the database and API carry."""

    PENDING = "pending"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    BLOCKED = "blocked"

    @property
    def is_terminal(self) -> bool:
        # No default branch: mypy reports a missing return if a member is added
        # without being classified here.
        match self:
            case PaymentStatus.PENDING | PaymentStatus.PROCESSING | PaymentStatus.REQUIRES_ACTION:
                return False
            case (
                PaymentStatus.SUCCEEDED
                | PaymentStatus.FAILED
                | PaymentStatus.CANCELED
                | PaymentStatus.BLOCKED
            ):
                return True


class RefundStatus(StrEnum):
    """Where a refund stands."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        match self:
            case RefundStatus.PENDING:
                return False
            case RefundStatus.SUCCEEDED | RefundStatus.FAILED:
                return True


_P = PaymentStatus
_R = RefundStatus
_S = TypeVar("_S", PaymentStatus, RefundStatus)

PAYMENT_TRANSITIONS: Mapping[PaymentStatus, frozenset[PaymentStatus]] = MappingProxyType(
    {
        # Stripe's webhook or the poller may report a final state before our own
        # "processing" write-back lands, so pending may jump straight to any of them.
        _P.PENDING: frozenset(
            {_P.PROCESSING, _P.REQUIRES_ACTION, _P.SUCCEEDED, _P.FAILED, _P.CANCELED, _P.BLOCKED}
        ),
        _P.PROCESSING: frozenset({_P.REQUIRES_ACTION, _P.SUCCEEDED, _P.FAILED, _P.CANCELED}),
        _P.REQUIRES_ACTION: frozenset({_P.PROCESSING, _P.SUCCEEDED, _P.FAILED, _P.CANCELED}),
        _P.SUCCEEDED: frozenset(),
        _P.FAILED: frozenset(),
        _P.CANCELED: frozenset(),
        _P.BLOCKED: frozenset(),
    }
)

REFUND_TRANSITIONS: Mapping[RefundStatus, frozenset[RefundStatus]] = MappingProxyType(
    {
        _R.PENDING: frozenset({_R.SUCCEEDED, _R.FAILED}),
        _R.SUCCEEDED: frozenset(),
        _R.FAILED: frozenset(),
    }
)


def _targets(current: PaymentStatus | RefundStatus) -> frozenset[PaymentStatus | RefundStatus]:
    if isinstance(current, PaymentStatus):
        return PAYMENT_TRANSITIONS[current]
    return REFUND_TRANSITIONS[current]


def _entity(status: PaymentStatus | RefundStatus) -> str:
    return "payment" if isinstance(status, PaymentStatus) else "refund"


def _same_kind(current: PaymentStatus | RefundStatus, target: PaymentStatus | RefundStatus) -> None:
    # StrEnum members compare as strings, so RefundStatus.PENDING would otherwise
    # pass for PaymentStatus.PENDING.
    if type(current) is not type(target):
        raise TypeError(f"cannot compare {type(current).__name__} with {type(target).__name__}")


@overload
def check_transition(current: PaymentStatus, target: PaymentStatus) -> None: ...
@overload
def check_transition(current: RefundStatus, target: RefundStatus) -> None: ...
def check_transition(
    current: PaymentStatus | RefundStatus, target: PaymentStatus | RefundStatus
) -> None:
    """Raise InvalidTransition unless the table allows current -> target."""
    _same_kind(current, target)
    if target not in _targets(current):
        raise InvalidTransition(entity=_entity(current), current=current, target=target)


@overload
def allowed_predecessors(target: PaymentStatus) -> tuple[PaymentStatus, ...]: ...
@overload
def allowed_predecessors(target: RefundStatus) -> tuple[RefundStatus, ...]: ...
def allowed_predecessors(
    target: PaymentStatus | RefundStatus,
) -> tuple[PaymentStatus, ...] | tuple[RefundStatus, ...]:
    """Statuses that may move to target, sorted by value."""
    if isinstance(target, PaymentStatus):
        return tuple(sorted(s for s, nxt in PAYMENT_TRANSITIONS.items() if target in nxt))
    return tuple(sorted(s for s, nxt in REFUND_TRANSITIONS.items() if target in nxt))


def predecessors_for(target: PaymentStatus | RefundStatus) -> list[str]:
    """The string values of allowed_predecessors(target), for SQL parameters."""
    return [s.value for s in allowed_predecessors(target)]


_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# Set by the guard itself, or used as its own parameter names.
_RESERVED_COLUMNS = frozenset({"id", "status", "updated_at", "allowed"})


def _identifier(name: object, what: str) -> str:
    # fullmatch, not match: "$" alone would let a trailing newline through.
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"invalid SQL {what} name: {name!r}")
    return name


def guarded_update_sql(
    table: str, target: PaymentStatus | RefundStatus, set_columns: Sequence[str] = ()
) -> str:
    """An UPDATE that moves one row to target only from an allowed predecessor.

    Run it with ``{"id": ..., **guard_params(target), <column>: value...}``;
    zero rows returned means the row was already past target (a no-op, e.g.
    the poller losing the race to the webhook) or does not exist.
    """
    _identifier(table, "table")
    if isinstance(set_columns, str):
        raise TypeError("set_columns must be a sequence of column names, not a str")
    columns = [_identifier(c, "column") for c in set_columns]
    clash = sorted(set(columns) & _RESERVED_COLUMNS)
    if clash:
        raise ValueError(f"columns set by the guard itself: {', '.join(clash)}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"duplicate columns: {columns}")
    if not allowed_predecessors(target):
        raise ValueError(f"no status may move to {target.value!r}; the update could never match")
    assignments = ", ".join(
        ["status = %(status)s", *(f"{c} = %({c})s" for c in columns), "updated_at = now()"]
    )
    return (
        f"UPDATE {table} SET {assignments} "
        "WHERE id = %(id)s AND status = ANY(%(allowed)s) RETURNING *"
    )


def guard_params(target: PaymentStatus | RefundStatus) -> dict[str, str | list[str]]:
    """The status and allowed-predecessor parameters for guarded_update_sql."""
    return {"status": target.value, "allowed": predecessors_for(target)}


_STRIPE_PAYMENT_INTENT: Mapping[str, PaymentStatus] = MappingProxyType(
    {
        # We only ask after confirming, so needing a payment method again means
        # the charge attempt was declined.
        "requires_payment_method": _P.FAILED,
        "requires_confirmation": _P.PROCESSING,
        "processing": _P.PROCESSING,
        "requires_action": _P.REQUIRES_ACTION,
        # Authorised but not captured: money has not moved yet.
        "requires_capture": _P.PROCESSING,
        "succeeded": _P.SUCCEEDED,
        "canceled": _P.CANCELED,
    }
)

_STRIPE_REFUND: Mapping[str, RefundStatus] = MappingProxyType(
    {
        "pending": _R.PENDING,
        "requires_action": _R.PENDING,
        "succeeded": _R.SUCCEEDED,
        "failed": _R.FAILED,
        # A canceled refund returned nothing to the customer.
        "canceled": _R.FAILED,
    }
)


def _mapped(table: Mapping[str, _S], kind: str, stripe_status: str) -> _S:
    try:
        return table[stripe_status]
    except (KeyError, TypeError):
        raise ValidationError(
            f"Unknown Stripe {kind} status: {stripe_status!r}.",
            param="status",
            code="unknown_stripe_status",
        ) from None


def map_stripe_payment_intent_status(stripe_status: str) -> PaymentStatus:
    """Our payment status for a Stripe PaymentIntent status."""
    return _mapped(_STRIPE_PAYMENT_INTENT, "PaymentIntent", stripe_status)


def map_stripe_refund_status(stripe_status: str) -> RefundStatus:
    """Our refund status for a Stripe Refund status."""
    return _mapped(_STRIPE_REFUND, "Refund", stripe_status)
