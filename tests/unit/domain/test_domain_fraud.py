"""Fraud rules: velocity, amount limits, blocklists and configuration from the environment."""

from __future__ import annotations

from paystream.domain.fraud import (
    FraudConfig,
    FraudDecision,
    PaymentFacts,
    VelocitySnapshot,
    evaluate,
)

DEFAULTS = FraudConfig()


def facts(
    n: int = 1,
    *,
    amount: int = 1_000,
    currency: str = "usd",
    customer: str | None = "cus_1",
    payment_method: str | None = "pm_1",
) -> PaymentFacts:
    return PaymentFacts(f"pay_{n}", customer, payment_method, amount, currency)


def test_clean_payment_is_approved() -> None:
    decision = evaluate(facts(), VelocitySnapshot(), DEFAULTS)
    assert decision == FraudDecision("pay_1", approved=True, score=0, rules_hit=())
    assert decision.to_dict() == {
        "payment_id": "pay_1",
        "approved": True,
        "score": 0,
        "rules_hit": [],
    }


def test_sixth_quick_payment_by_one_customer_is_blocked() -> None:
    decisions = []
    for n in range(1, 7):
        # Each on its own card so only the customer count can trip.
        previous = n - 1
        velocity = VelocitySnapshot(customer_count=previous, customer_amount=previous * 1_000)
        decisions.append(evaluate(facts(n, payment_method=f"pm_{n}"), velocity, DEFAULTS))
    assert [d.approved for d in decisions] == [True] * 5 + [False]
    assert decisions[-1].rules_hit == ("customer_velocity_count",)
    assert decisions[-1].score == 40


def test_customer_amount_velocity() -> None:
    under = VelocitySnapshot(customer_count=1, customer_amount=499_000)
    assert evaluate(facts(amount=1_000), under, DEFAULTS).approved
    decision = evaluate(facts(amount=1_001), under, DEFAULTS)
    assert decision.rules_hit == ("customer_velocity_amount",)


def test_payment_method_velocity() -> None:
    velocity = VelocitySnapshot(payment_method_count=5)
    decision = evaluate(facts(customer="cus_new"), velocity, DEFAULTS)
    assert decision.rules_hit == ("payment_method_velocity_count",)


def test_amount_limit_is_per_currency() -> None:
    # With the defaults a large payment also trips the customer amount velocity.
    assert evaluate(facts(amount=1_000_000), VelocitySnapshot(), DEFAULTS).rules_hit == (
        "customer_velocity_amount",
    )
    config = FraudConfig(max_amount_per_customer=10**12)

    def rules(amount: int, currency: str) -> tuple[str, ...]:
        decision = evaluate(facts(amount=amount, currency=currency), VelocitySnapshot(), config)
        return decision.rules_hit

    assert rules(1_000_000, "usd") == ()
    assert rules(1_000_001, "usd") == ("amount_limit",)
    # The same number of minor units is a small payment in yen.
    assert rules(1_000_001, "jpy") == ()
    assert rules(100_000_001, "jpy") == ("amount_limit",)
    # Unlisted currencies fall back to the default limit; codes are case-insensitive.
    assert rules(1_000_001, "CHF") == ("amount_limit",)
    assert rules(1_000_001, "JPY") == ()


def test_blocklists_from_config_and_from_the_caller() -> None:
    config = FraudConfig(
        blocked_customers=frozenset({"cus_bad"}), blocked_payment_methods=frozenset({"pm_bad"})
    )
    assert evaluate(facts(customer="cus_bad"), VelocitySnapshot(), config).rules_hit == (
        "blocklisted_customer",
    )
    assert evaluate(facts(payment_method="pm_bad"), VelocitySnapshot(), config).rules_hit == (
        "blocklisted_payment_method",
    )
    decision = evaluate(
        facts(customer="cus_2", payment_method="pm_2"),
        VelocitySnapshot(),
        DEFAULTS,
        blocked_customers=frozenset({"cus_2"}),
        blocked_payment_methods=frozenset({"pm_2"}),
    )
    assert decision.rules_hit == ("blocklisted_customer", "blocklisted_payment_method")
    assert (decision.approved, decision.score) == (False, 80)


def test_every_rule_at_once_caps_the_score_and_keeps_a_fixed_order() -> None:
    config = FraudConfig(
        blocked_customers=frozenset({"cus_1"}), blocked_payment_methods=frozenset({"pm_1"})
    )
    velocity = VelocitySnapshot(customer_count=9, customer_amount=10**9, payment_method_count=9)
    decision = evaluate(facts(amount=5_000_000), velocity, config)
    assert decision.rules_hit == (
        "customer_velocity_count",
        "customer_velocity_amount",
        "payment_method_velocity_count",
        "amount_limit",
        "blocklisted_customer",
        "blocklisted_payment_method",
    )
    assert decision.score == 100
    assert not decision.approved


def test_payment_without_customer_or_card_skips_their_rules() -> None:
    velocity = VelocitySnapshot(customer_count=99, customer_amount=10**9, payment_method_count=99)
    decision = evaluate(facts(customer=None, payment_method=None), velocity, DEFAULTS)
    assert decision.approved


def test_defaults() -> None:
    assert DEFAULTS.velocity_window_seconds == 60
    assert DEFAULTS.max_payments_per_customer == 5
    assert DEFAULTS.max_amount_per_customer == 500_000
    assert DEFAULTS.max_payments_per_payment_method == 5
    assert DEFAULTS.amount_limit("usd") == 1_000_000
    assert DEFAULTS.amount_limit("jpy") == 100_000_000
