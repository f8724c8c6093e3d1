"""PayStream's pure domain: money, state machines, fraud rules, ledger journals; no I/O."""

from __future__ import annotations

from .errors import DomainError, InvalidTransition, ValidationError
from .fraud import FraudConfig, FraudDecision, PaymentFacts, VelocitySnapshot, evaluate
from .ids import new_id, stripe_idempotency_key
from .ledger import (
    Entry,
    Journal,
    journal_for_payment,
    journal_for_refund,
    merchant_available_account,
    stripe_clearing_account,
)
from .money import CURRENCIES, MAX_AMOUNT, Currency, currency, parse_amount
from .objects import payment_object, refund_object
from .refunds import check_refund, refundable_amount
from .signing import request_fingerprint, sign
from .status import (
    PAYMENT_TRANSITIONS,
    REFUND_TRANSITIONS,
    PaymentStatus,
    RefundStatus,
    allowed_predecessors,
    check_transition,
    guard_params,
    guarded_update_sql,
    map_stripe_payment_intent_status,
    map_stripe_refund_status,
    predecessors_for,
)

__all__ = [
    "CURRENCIES",
    "MAX_AMOUNT",
    "PAYMENT_TRANSITIONS",
    "REFUND_TRANSITIONS",
    "Currency",
    "DomainError",
    "Entry",
    "FraudConfig",
    "FraudDecision",
    "InvalidTransition",
    "Journal",
    "PaymentFacts",
    "PaymentStatus",
    "RefundStatus",
    "ValidationError",
    "VelocitySnapshot",
    "allowed_predecessors",
    "check_refund",
    "check_transition",
    "currency",
    "evaluate",
    "guard_params",
    "guarded_update_sql",
    "journal_for_payment",
    "journal_for_refund",
    "map_stripe_payment_intent_status",
    "map_stripe_refund_status",
    "merchant_available_account",
    "new_id",
    "parse_amount",
    "payment_object",
    "predecessors_for",
    "refund_object",
    "refundable_amount",
    "request_fingerprint",
    "sign",
    "stripe_clearing_account",
    "stripe_idempotency_key",
]
