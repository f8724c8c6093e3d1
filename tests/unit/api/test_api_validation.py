"""Request parsing and field checks (pure)."""

from __future__ import annotations

import pytest

from api import validation
from api.errors import InvalidRequest
from paystream.domain.errors import ValidationError


@pytest.mark.parametrize("raw", [b"", b"  \n", b"{}"])
def test_empty_body_is_an_empty_object(raw: bytes) -> None:
    assert validation.parse_json_object(raw) == {}


@pytest.mark.parametrize(
    "raw",
    [b"nope", b"[]", b"1", b'"s"', b"null", b'{"a": NaN}', b'{"a": Infinity}', b"\xff",
     b"{" * 1, b"[" * 50_000, b"9" * 5_000],
)
def test_non_objects_and_non_json_are_refused_naming_body(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        validation.parse_json_object(raw)
    assert info.value.param == "body"
    assert info.value.status == 400


def test_unknown_parameters_are_named() -> None:
    validation.reject_unknown({"a": 1}, ["a", "b"])
    with pytest.raises(InvalidRequest) as info:
        validation.reject_unknown({"a": 1, "zz": 2}, ["a"])
    assert (info.value.param, info.value.code) == ("zz", "parameter_unknown")


@pytest.mark.parametrize(
    ("value", "code"),
    [(None, "parameter_missing"), ("", "parameter_missing"), ("  ", "parameter_missing"),
     (5, "parameter_invalid"), ("x" * 256, "parameter_too_long"), ("a\x00b", "parameter_invalid"),
     ("\ud800", "parameter_invalid")],
)
def test_text_refusals(value: object, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        validation.text(value, "customer")
    assert (info.value.param, info.value.code) == ("customer", code)


def test_text_and_optional_text_accept() -> None:
    assert validation.text("cus_1", "customer") == "cus_1"
    assert validation.text("é" * 255, "customer") == "é" * 255
    assert validation.optional_text(None, "description", max_length=3) is None
    assert validation.optional_text("", "description", max_length=3) == ""
    with pytest.raises(ValidationError):
        validation.optional_text("abcd", "description", max_length=3)


def test_metadata_limits() -> None:
    assert validation.metadata(None) == {}
    ok = {f"k{i}": "v" * 500 for i in range(50)}
    assert validation.metadata(ok) == ok
    cases = [
        ([], "metadata"),
        ({f"k{i}": "v" for i in range(51)}, "metadata"),
        ({"": "v"}, "metadata"),
        ({"k" * 41: "v"}, "metadata"),
        ({"k": 1}, "metadata[k]"),
        ({"k": None}, "metadata[k]"),
        ({"k": "v" * 501}, "metadata[k]"),
        ({"k": "\x00"}, "metadata[k]"),
        ({"k\x00": "v"}, "metadata"),
    ]
    for value, param in cases:
        with pytest.raises(ValidationError) as info:
            validation.metadata(value)
        assert info.value.param == param, value


def test_metadata_param_stays_encodable() -> None:
    with pytest.raises(ValidationError) as info:
        validation.metadata({"\ud800": 1})
    info.value.param.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "prefix", "expected"),
    [("pay_" + "a" * 24, "pay", "pay_" + "a" * 24), ("re_" + "Z9" * 12, "re", "re_" + "Z9" * 12),
     ("pay_" + "a" * 23, "pay", None), ("pay_" + "a" * 24 + "\n", "pay", None),
     ("re_" + "a" * 24, "pay", None), (None, "pay", None), (5, "pay", None),
     ("pay_" + "-" * 24, "pay", None)],
)
def test_object_id(value: object, prefix: str, expected: str | None) -> None:
    assert validation.object_id(value, prefix) == expected


def test_idempotency_key() -> None:
    assert validation.idempotency_key(None) is None
    assert validation.idempotency_key("k" * 255) == "k" * 255
    for bad in ("", "k" * 256, "a\tb", "\udcff"):
        with pytest.raises(InvalidRequest) as info:
            validation.idempotency_key(bad)
        assert info.value.param == "Idempotency-Key"


@pytest.mark.parametrize(("raw", "expected"), [(None, 10), ("1", 1), ("100", 100), ("007", 7)])
def test_list_limit(raw: str | None, expected: int) -> None:
    assert validation.list_limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "101", "-1", "1.5", "", "abc", "１", "99999"])
def test_list_limit_refusals(raw: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validation.list_limit(raw)
    assert info.value.param == "limit"
