"""Small pure parts: API keys, merchant credentials, balances, idempotency keys, OpenAPI."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import pytest

from api.auth import bearer_key
from api.balances import balance_object
from api.errors import AuthenticationFailed
from api.idempotency import redis_key
from api.logs import warn_throttled
from api.merchants import NewMerchant, check_webhook_url, hash_api_key
from api.metrics import Metrics
from api.openapi import openapi_document
from paystream.domain.money import CURRENCIES


@pytest.mark.parametrize(("header", "key"), [("Bearer sk_1", "sk_1"), ("bearer  sk_1 ", "sk_1"),
                                             ("BEARER sk_1", "sk_1")])
def test_bearer_key(header: str, key: str) -> None:
    assert bearer_key(header) == key


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer  ", "Basic abc", "sk_1"])
def test_bearer_key_refusals(header: str | None) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        bearer_key(header)
    assert info.value.status == 401


def test_new_merchant_stores_only_the_hash() -> None:
    merchant = NewMerchant(name="Shop", webhook_url="https://shop.example/hooks")
    row = merchant.row()
    assert row["api_key_hash"] == hashlib.sha256(merchant.api_key.encode()).hexdigest()
    assert merchant.api_key not in row.values()
    assert set(merchant.credentials()) == {"id", "api_key", "webhook_secret"}
    assert merchant.api_key not in repr(merchant)
    assert merchant.webhook_secret not in repr(merchant)
    assert re.fullmatch(r"acct_[0-9A-Za-z]{24}", merchant.id)
    assert merchant.webhook_secret.startswith("whsec_")
    assert hash_api_key(merchant.api_key) == row["api_key_hash"]


@pytest.mark.parametrize("url", ["ftp://x", "shop.example/hooks", "http://", "javascript:x"])
def test_webhook_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError):
        check_webhook_url(url)
    with pytest.raises(ValueError):
        NewMerchant(name="Shop", webhook_url=url)
    with pytest.raises(ValueError):
        NewMerchant(name=" ")


def test_redis_keys_are_scoped_and_bounded() -> None:
    a = redis_key("acct_1", "k" * 255)
    assert a.startswith("idem:acct_1:") and len(a) < 100
    assert redis_key("acct_2", "k" * 255) != a
    assert redis_key("acct_1", "other") != a


def test_balance_object_signs() -> None:
    rows = [
        {"account": "merchant_available:acct_1:usd", "currency": "usd", "balance": -3800},
        {"account": "stripe_clearing:usd", "currency": "usd", "balance": 3800},
        {"account": "merchant_available:acct_1:jpy", "currency": "jpy", "balance": -700},
    ]
    obj = balance_object("acct_1", rows)
    assert obj["available"] == [{"currency": "jpy", "amount": 700},
                                {"currency": "usd", "amount": 3800}]
    assert len(obj["accounts"]) == 3
    assert balance_object("acct_2", rows)["available"] == []


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_document_is_consistent() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["responses"], (method, path)
            assert op["operationId"]
    create = schemas["CreatePayment"]["properties"]
    assert create["currency"]["enum"] == sorted(CURRENCIES)
    assert create["amount"]["maximum"] == 99_999_999
    # Writes document the consistency token; errors the Stripe shape.
    created = doc["paths"]["/v1/payments"]["post"]["responses"]["201"]
    assert created["headers"]["PayStream-Consistency-Token"]["required"] is True
    assert schemas["Error"]["properties"]["error"]["required"] == [
        "type", "code", "message", "param"]


def test_outage_warnings_are_throttled(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.throttle")
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        for _ in range(5):
            warn_throttled(logger, "unit-test-key", "down: %s", "x")
        warn_throttled(logger, "unit-test-other", "other")
        warn_throttled(logger, "unit-test-eager", "eager", every_seconds=0)
        warn_throttled(logger, "unit-test-eager", "eager", every_seconds=0)
    assert [r.getMessage() for r in caplog.records] == ["down: x", "other", "eager", "eager"]


def test_charted_request_series_start_at_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # A series born at 1 gives rate() = 0 until a second request: the console's
    # "created" line stayed flat for a fresh stack's first payment.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    text = Metrics().exposition().decode()
    assert ('paystream_api_requests_total{method="POST",route="/v1/payments",status="201"} 0.0'
            in text)
    assert ('paystream_api_requests_total{method="POST",route="/v1/refunds",status="503"} 0.0'
            in text)
