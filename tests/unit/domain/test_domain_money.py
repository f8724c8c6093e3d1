"""Currencies, amount parsing and formatting in integer minor units."""

from __future__ import annotations

import pytest

from paystream.domain.errors import DomainError, ValidationError
from paystream.domain.money import (
    CURRENCIES,
    MAX_AMOUNT,
    Currency,
    Money,
    currency,
    format_minor,
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


@pytest.mark.parametrize(
    ("amount", "code", "text"),
    [
        (1050, "usd", "10.50"),
        (5, "usd", "0.05"),
        (0, "usd", "0.00"),
        (-1050, "usd", "-10.50"),
        (500, "jpy", "500"),
        (1234, "kwd", "1.234"),
        (5, "bhd", "0.005"),
        (MAX_AMOUNT, "eur", "999999.99"),
    ],
)
def test_format_minor(amount: int, code: str, text: str) -> None:
    assert format_minor(amount, code) == text
    assert format_minor(amount, currency(code)) == text


def test_money_arithmetic_stays_in_one_currency() -> None:
    usd, eur = currency("usd"), currency("eur")
    assert Money(1000, usd) + Money(50, usd) == Money(1050, usd)
    assert Money(1000, usd) - Money(1500, usd) == Money(-500, usd)
    assert str(Money(1050, usd)) == "10.50 USD"
    with pytest.raises(DomainError):
        _ = Money(1, usd) + Money(1, eur)
    with pytest.raises(DomainError):
        _ = Money(1, usd) - Money(1, eur)


@pytest.mark.parametrize("bad", [10.0, True, "10"])
def test_money_refuses_non_int_amounts(bad: object) -> None:
    with pytest.raises(TypeError):
        Money(bad, currency("usd"))  # type: ignore[arg-type]
