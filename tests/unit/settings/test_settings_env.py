"""The one settings parser: defaults, and refusals that name the variable."""

from __future__ import annotations

import pytest

from paystream.settings import Settings, SettingsError


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
