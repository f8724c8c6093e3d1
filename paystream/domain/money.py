"""Money as integer minor units with an ISO 4217 currency; no floats anywhere."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .errors import ValidationError

# Stripe's ceiling for a single charge: eight digits of minor units.
MAX_AMOUNT = 99_999_999


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency: lower-case code and the number of minor-unit digits."""

    code: str
    exponent: int


def _registry(*currencies: Currency) -> Mapping[str, Currency]:
    return MappingProxyType({c.code: c for c in currencies})


CURRENCIES: Mapping[str, Currency] = _registry(
    Currency("usd", 2),
    Currency("eur", 2),
    Currency("gbp", 2),
    Currency("chf", 2),
    Currency("cad", 2),
    Currency("aud", 2),
    Currency("nzd", 2),
    Currency("sek", 2),
    Currency("nok", 2),
    Currency("dkk", 2),
    Currency("pln", 2),
    Currency("jpy", 0),
    Currency("krw", 0),
    Currency("kwd", 3),
    Currency("bhd", 3),
    Currency("jod", 3),
    Currency("omr", 3),
)


def currency(code: object) -> Currency:
    """Look up a currency by code, case-insensitively."""
    found = CURRENCIES.get(code.lower()) if isinstance(code, str) else None
    if found is None:
        raise ValidationError(
            f"Invalid currency: {code!r}. Supported: {', '.join(sorted(CURRENCIES))}.",
            param="currency",
            code="invalid_currency",
        )
    return found


def parse_amount(value: object, *, param: str = "amount") -> int:
    """Validate a request amount: a real int with 0 < value <= MAX_AMOUNT."""
    if value is None:
        raise ValidationError(
            f"Missing required param: {param}.", param=param, code="parameter_missing"
        )
    # A float such as 10.0 is refused even when whole: the API takes minor units.
    if type(value) is not int:
        raise ValidationError(
            f"Invalid integer: {value!r}. {param} must be an integer in minor units.",
            param=param,
            code="parameter_invalid_integer",
        )
    if value < 1:
        raise ValidationError(
            f"{param} must be at least 1 minor unit, got {value}.",
            param=param,
            code="amount_too_small",
        )
    if value > MAX_AMOUNT:
        raise ValidationError(
            f"{param} must be no more than {MAX_AMOUNT}, got {value}.",
            param=param,
            code="amount_too_large",
        )
    return value
