"""Currencies and amount parsing in integer minor units."""

from __future__ import annotations

import pytest

from paystream.domain.errors import ValidationError
from paystream.domain.money import (
    CURRENCIES,
    MAX_AMOUNT,
    Currency,
    currency,
    parse_amount,
)


def test_registry_covers_the_required_currencies_with_their_exponents() -> None:
    expected = {
        "usd": 2,
        "eur": 2,
        "gbp": 2,
        "chf": 2,
        "cad": 2,
        "aud": 2,
        "jpy": 0,
        "krw": 0,
        "kwd": 3,
        "bhd": 3,
    }
    for code, exponent in expected.items():
        assert CURRENCIES[code] == Currency(code, exponent)
    for code, cur in CURRENCIES.items():
        assert cur.code == code == code.lower()
        assert len(code) == 3


def test_currency_lookup() -> None:
    assert currency("usd").exponent == 2
    assert currency("JPY") == Currency("jpy", 0)


@pytest.mark.parametrize("bad", ["xxx", "", "us", None, 840, b"usd"])
def test_unknown_currency(bad: object) -> None:
    with pytest.raises(ValidationError) as caught:
        currency(bad)
    assert (caught.value.param, caught.value.code) == ("currency", "invalid_currency")


@pytest.mark.parametrize("good", [1, 1050, MAX_AMOUNT])
def test_parse_amount_accepts_ints_in_range(good: int) -> None:
    assert parse_amount(good) == good


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "parameter_missing"),
        (True, "parameter_invalid_integer"),
        (False, "parameter_invalid_integer"),
        (10.0, "parameter_invalid_integer"),
        (10.5, "parameter_invalid_integer"),
        ("100", "parameter_invalid_integer"),
        ([100], "parameter_invalid_integer"),
        (0, "amount_too_small"),
        (-1, "amount_too_small"),
        (MAX_AMOUNT + 1, "amount_too_large"),
        (100_000_000, "amount_too_large"),
    ],
)
def test_parse_amount_rejects(value: object, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_amount(value)
    assert caught.value.code == code
    assert caught.value.param == "amount"
    assert "amount" in caught.value.message


def test_parse_amount_names_the_param() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_amount("5", param="application_fee")
    assert caught.value.param == "application_fee"
