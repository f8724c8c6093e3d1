"""The one settings parser: defaults, and refusals that name the variable."""

from __future__ import annotations

import pytest

from paystream.domain.fraud import FraudConfig
from paystream.settings import Settings, SettingsError, fraud_config_from_env

DEFAULTS = FraudConfig()


def test_defaults_keep_outage_patience_below_the_stall_threshold() -> None:
    settings = Settings.from_env({})
    assert settings.stripe_outage_patience_seconds < settings.watchdog_stall_seconds


def test_outage_patience_at_or_above_the_stall_threshold_is_refused() -> None:
    with pytest.raises(SettingsError, match="STRIPE_OUTAGE_PATIENCE_SECONDS"):
        Settings.from_env({"STRIPE_OUTAGE_PATIENCE_SECONDS": "60",
                           "WATCHDOG_STALL_SECONDS": "60"})


def test_a_bad_integer_names_its_variable() -> None:
    with pytest.raises(SettingsError, match="STRIPE_REQUESTS_PER_SECOND"):
        Settings.from_env({"STRIPE_REQUESTS_PER_SECOND": "fast"})


def test_fraud_config_from_env() -> None:
    assert fraud_config_from_env({}) == DEFAULTS
    config = fraud_config_from_env(
        {
            "FRAUD_VELOCITY_WINDOW_SECONDS": "120",
            "FRAUD_MAX_PAYMENTS_PER_CUSTOMER": "3",
            "FRAUD_MAX_AMOUNT_PER_CUSTOMER": "100000",
            "FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD": "2",
            "FRAUD_AMOUNT_LIMITS": "USD=5000, kwd=300000",
            "FRAUD_DEFAULT_AMOUNT_LIMIT": "7000",
            "FRAUD_BLOCKED_CUSTOMERS": "cus_a, cus_b,",
            "FRAUD_BLOCKED_PAYMENT_METHODS": "pm_x",
            "UNRELATED": "ignored",
        }
    )
    assert config.velocity_window_seconds == 120
    assert config.max_payments_per_customer == 3
    assert config.max_amount_per_customer == 100_000
    assert config.max_payments_per_payment_method == 2
    assert config.amount_limit("usd") == 5_000
    assert config.amount_limit("kwd") == 300_000
    assert config.amount_limit("eur") == 1_000_000  # defaults kept under the override
    assert config.amount_limit("chf") == 7_000
    assert config.blocked_customers == {"cus_a", "cus_b"}
    assert config.blocked_payment_methods == {"pm_x"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FRAUD_MAX_PAYMENTS_PER_CUSTOMER", "five"),
        ("FRAUD_MAX_PAYMENTS_PER_CUSTOMER", "0"),
        ("FRAUD_VELOCITY_WINDOW_SECONDS", "-60"),
        ("FRAUD_MAX_AMOUNT_PER_CUSTOMER", "1.5"),
        ("FRAUD_AMOUNT_LIMITS", "usd"),
        ("FRAUD_AMOUNT_LIMITS", "usd=lots"),
        ("FRAUD_AMOUNT_LIMITS", "=5"),
    ],
)
def test_from_env_rejects_malformed_values_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        fraud_config_from_env({name: value})


@pytest.mark.parametrize(("name", "value"), [
    ("POLL_INTERVAL_SECONDS", "nan"),
    ("CIRCUIT_RESET_SECONDS", "-1"),
    ("STRIPE_TIMEOUT_SECONDS", "inf"),
    ("STRIPE_OUTAGE_PATIENCE_SECONDS", "soon"),
])
def test_a_duration_that_is_not_a_finite_non_negative_number_is_refused(name: str,
                                                                        value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
