"""Request parsing and field checks, pure: each refusal names the param it came from."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from api.errors import InvalidRequest
from paystream.domain.errors import ValidationError
from paystream.domain.ids import MAX_IDEMPOTENCY_KEY

MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
MAX_TEXT_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 1000
DEFAULT_LIST_LIMIT = 10
MAX_LIST_LIMIT = 100

# Our ids: a short prefix and 24 base62 characters (paystream.domain.ids.new_id).
_ID = {prefix: re.compile(rf"{prefix}_[0-9A-Za-z]{{24}}") for prefix in ("pay", "re")}


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity by default; they are not JSON.
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body is an object with no params."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8 and integers past Python's digit limit;
        # RecursionError a deeply nested document.
        raise InvalidRequest(
            "Invalid JSON in the request body.", param="body", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            "The request body must be a JSON object.", param="body", code="invalid_json"
        )
    return data


def reject_unknown(body: Mapping[str, object], allowed: Iterable[str]) -> None:
    """Stripe refuses parameters it does not know, so typos are not silently ignored."""
    known = set(allowed)
    for name in body:
        if name not in known:
            raise InvalidRequest(
                f"Received unknown parameter: {name}.", param=name, code="parameter_unknown"
            )


def _storable(value: str, param: str) -> str:
    # Postgres text refuses NUL, and a lone surrogate cannot be encoded: either
    # would otherwise surface as a 500 from the driver.
    if "\x00" in value:
        raise ValidationError(
            f"{param} must not contain NUL characters.", param=param, code="parameter_invalid"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{param} is not valid Unicode.", param=param, code="parameter_invalid"
        ) from None
    return value


def _bounded_string(value: object, param: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{param} must be a string.", param=param, code="parameter_invalid")
    if len(value) > max_length:
        raise ValidationError(
            f"{param} must be at most {max_length} characters.",
            param=param,
            code="parameter_too_long",
        )
    return _storable(value, param)


def text(value: object, param: str, *, max_length: int = MAX_TEXT_LENGTH) -> str:
    """A required, non-empty string of at most max_length characters."""
    if value is None:
        raise ValidationError(
            f"Missing required param: {param}.", param=param, code="parameter_missing"
        )
    if isinstance(value, str) and not value.strip():
        raise ValidationError(
            f"{param} must not be empty.", param=param, code="parameter_missing"
        )
    return _bounded_string(value, param, max_length)


def optional_text(value: object, param: str, *, max_length: int) -> str | None:
    """None, or a string (possibly empty) of at most max_length characters."""
    return None if value is None else _bounded_string(value, param, max_length)


def metadata(value: object, param: str = "metadata") -> dict[str, str]:
    """At most 50 string keys (up to 40 chars) with string values (up to 500 chars)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(
            f"{param} must be an object of string keys and values.",
            param=param,
            code="parameter_invalid",
        )
    if len(value) > MAX_METADATA_KEYS:
        raise ValidationError(
            f"{param} can have at most {MAX_METADATA_KEYS} keys.",
            param=param,
            code="metadata_too_many_keys",
        )
    result: dict[str, str] = {}
    for key, item in value.items():
        where = f"{param}[{key}]" if len(key) <= MAX_METADATA_KEY_LENGTH else param
        if not key or len(key) > MAX_METADATA_KEY_LENGTH:
            raise ValidationError(
                f"{param} keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters.",
                param=param,
                code="metadata_key_invalid",
            )
        _storable(key, param)
        if not isinstance(item, str):
            raise ValidationError(
                f"{where} must be a string.", param=_printable(where), code="parameter_invalid"
            )
        if len(item) > MAX_METADATA_VALUE_LENGTH:
            raise ValidationError(
                f"{where} must be at most {MAX_METADATA_VALUE_LENGTH} characters.",
                param=_printable(where),
                code="parameter_too_long",
            )
        result[key] = _storable(item, _printable(where))
    return result


def _printable(param: str) -> str:
    # The param is echoed in the JSON error; keep it encodable whatever the key held.
    return param.encode("utf-8", "backslashreplace").decode("utf-8")


def object_id(value: object, prefix: str) -> str | None:
    """The id if it has our format for prefix, else None (it cannot exist)."""
    if isinstance(value, str) and _ID[prefix].fullmatch(value):
        return value
    return None


def idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header: absent, or 1 to 255 printable characters."""
    param = "Idempotency-Key"
    if value is None:
        return None
    if not value or len(value) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            f"{param} must be 1 to {MAX_IDEMPOTENCY_KEY} characters.",
            param=param,
            code="idempotency_key_invalid",
        )
    # Lone surrogates are not printable either, so what passes is valid UTF-8.
    if not value.isprintable():
        raise InvalidRequest(
            f"{param} must contain only printable characters.",
            param=param,
            code="idempotency_key_invalid",
        )
    return value


def list_limit(raw: str | None) -> int:
    """The `limit` query parameter: 1 to 100, default 10."""
    if raw is None:
        return DEFAULT_LIST_LIMIT
    if not (raw.isascii() and raw.isdecimal()) or len(raw) > 4:
        raise InvalidRequest(
            f"limit must be an integer between 1 and {MAX_LIST_LIMIT}.",
            param="limit",
            code="parameter_invalid_integer",
        )
    value = int(raw)
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise InvalidRequest(
            f"limit must be an integer between 1 and {MAX_LIST_LIMIT}.",
            param="limit",
            code="parameter_invalid_integer",
        )
    return value
