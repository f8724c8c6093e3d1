"""Prefixed random ids and deterministic Stripe idempotency keys."""

from __future__ import annotations

import re

import pytest

from paystream.domain.ids import new_id, stripe_idempotency_key


def test_new_id_shape_and_uniqueness() -> None:
    ids = {new_id("pay") for _ in range(1_000)}
    assert len(ids) == 1_000
    assert all(re.fullmatch(r"pay_[0-9A-Za-z]{24}", i) for i in ids)
    assert new_id("re").startswith("re_")


@pytest.mark.parametrize("bad", ["", "pay_", "Pay", "pa y", "1pay"])
def test_new_id_rejects_odd_prefixes(bad: str) -> None:
    with pytest.raises(ValueError):
        new_id(bad)


def test_stripe_idempotency_key_is_deterministic() -> None:
    assert stripe_idempotency_key("create", "pay_1") == "paystream-create-pay_1"
    assert stripe_idempotency_key("refund", "re_1") == stripe_idempotency_key("refund", "re_1")
    with pytest.raises(ValueError):
        stripe_idempotency_key("", "pay_1")
    with pytest.raises(ValueError):
        stripe_idempotency_key("create", "x" * 300)
