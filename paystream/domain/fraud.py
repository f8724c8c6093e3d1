"""Fraud rules: a pure decision from one payment, its velocity window and the config.

The thresholds come from these variables, read by ``paystream.settings`` (all
optional; defaults in brackets):

    FRAUD_VELOCITY_WINDOW_SECONDS          sliding window length [60]
    FRAUD_MAX_PAYMENTS_PER_CUSTOMER        payments per customer per window [5]
    FRAUD_MAX_AMOUNT_PER_CUSTOMER          minor units per customer per window [500000]
    FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD  payments per payment method per window [5]
    FRAUD_AMOUNT_LIMITS                    per-currency single-payment limits merged
                                           over the defaults, "usd=1000000,jpy=100000000"
    FRAUD_DEFAULT_AMOUNT_LIMIT             limit for currencies not listed [1000000]
    FRAUD_BLOCKED_CUSTOMERS                comma-separated customer ids
    FRAUD_BLOCKED_PAYMENT_METHODS          comma-separated payment method ids
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

CUSTOMER_VELOCITY_COUNT = "customer_velocity_count"
CUSTOMER_VELOCITY_AMOUNT = "customer_velocity_amount"
PAYMENT_METHOD_VELOCITY_COUNT = "payment_method_velocity_count"
AMOUNT_LIMIT = "amount_limit"
BLOCKLISTED_CUSTOMER = "blocklisted_customer"
BLOCKLISTED_PAYMENT_METHOD = "blocklisted_payment_method"

SCORE_PER_RULE = 40

DEFAULT_AMOUNT_LIMITS: Mapping[str, int] = MappingProxyType(
    {"usd": 1_000_000, "eur": 1_000_000, "gbp": 1_000_000, "jpy": 100_000_000}
)


@dataclass(frozen=True, slots=True)
class FraudConfig:
    """Thresholds and blocklists for the fraud rules."""

    velocity_window_seconds: int = 60
    max_payments_per_customer: int = 5
    max_amount_per_customer: int = 500_000
    max_payments_per_payment_method: int = 5
    amount_limits: Mapping[str, int] = field(default_factory=lambda: DEFAULT_AMOUNT_LIMITS)
    default_amount_limit: int = 1_000_000
    blocked_customers: frozenset[str] = frozenset()
    blocked_payment_methods: frozenset[str] = frozenset()

    def amount_limit(self, currency: str) -> int:
        """The single-payment limit for a currency code."""
        return self.amount_limits.get(currency.lower(), self.default_amount_limit)


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """What the rules need to know about the payment being judged."""

    payment_id: str
    customer: str | None
    payment_method: str | None
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class VelocitySnapshot:
    """What the window already holds, EXCLUDING the payment being judged.

    ``customer_amount`` sums the customer's payments in the same currency as
    the payment being judged; adding yen to cents would mean nothing.
    """

    customer_count: int = 0
    customer_amount: int = 0
    payment_method_count: int = 0


@dataclass(frozen=True, slots=True)
class FraudDecision:
    """The outcome persisted with the payment: approved, score 0-100, rules hit."""

    payment_id: str
    approved: bool
    score: int
    rules_hit: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "payment_id": self.payment_id,
            "approved": self.approved,
            "score": self.score,
            "rules_hit": list(self.rules_hit),
        }


def evaluate(
    facts: PaymentFacts,
    velocity: VelocitySnapshot,
    config: FraudConfig,
    *,
    blocked_customers: frozenset[str] = frozenset(),
    blocked_payment_methods: frozenset[str] = frozenset(),
) -> FraudDecision:
    """Run every rule; any hit blocks the payment.

    The keyword blocklists add to the config's, for lists kept outside the
    environment (a table, a database row).
    """
    customer = facts.customer
    method = facts.payment_method
    # Each (rule, hit) pair in a fixed order so rules_hit is deterministic.
    checks = (
        (
            CUSTOMER_VELOCITY_COUNT,
            customer is not None and velocity.customer_count + 1 > config.max_payments_per_customer,
        ),
        (
            CUSTOMER_VELOCITY_AMOUNT,
            customer is not None
            and velocity.customer_amount + facts.amount > config.max_amount_per_customer,
        ),
        (
            PAYMENT_METHOD_VELOCITY_COUNT,
            method is not None
            and velocity.payment_method_count + 1 > config.max_payments_per_payment_method,
        ),
        (AMOUNT_LIMIT, facts.amount > config.amount_limit(facts.currency)),
        (
            BLOCKLISTED_CUSTOMER,
            customer is not None
            and (customer in config.blocked_customers or customer in blocked_customers),
        ),
        (
            BLOCKLISTED_PAYMENT_METHOD,
            method is not None
            and (method in config.blocked_payment_methods or method in blocked_payment_methods),
        ),
    )
    rules_hit = tuple(rule for rule, hit in checks if hit)
    return FraudDecision(
        payment_id=facts.payment_id,
        approved=not rules_hit,
        score=min(100, SCORE_PER_RULE * len(rules_hit)),
        rules_hit=rules_hit,
    )
