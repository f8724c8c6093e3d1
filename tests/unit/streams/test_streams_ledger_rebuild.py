"""The pure parts of `paystream ledger rebuild --verify`: journals from changes, the Faust
balances changelog, and the differences reported (no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from faust.serializers import codecs

from paystream.settings import Settings
from streams.adapters.cdc import decode_change, id_key
from streams.bootstrap import bare_worker
from streams.errors import StreamsError
from streams.journals import journal_for_change
from streams.ops.ledger_rebuild import (
    Diff,
    changelog_balances,
    changelog_topic,
    faust_differences,
    journal_of,
)

settings = Settings.from_env()

PAYMENT = {"id": "pay_1", "merchant_id": "acct_1", "amount": 1050, "currency": "usd",
           "status": "processing", "customer": "c_1", "payment_method": "pm_card_visa",
           "description": None, "metadata": None, "amount_refunded": 0,
           "stripe_payment_intent_id": "pi_1", "failure_code": None, "failure_message": None,
           "created_at": "2026-11-23T14:59:31Z", "updated_at": "2026-11-23T14:59:31Z"}
REFUND = {"id": "re_1", "payment_id": "pay_1", "merchant_id": "acct_1", "amount": 500,
          "currency": "usd", "status": "pending", "stripe_refund_id": None,
          "created_at": "2026-11-23T15:00:00Z"}


def moved(before: dict[str, Any], status: str, table: str) -> bytes:
    return json.dumps({"before": before, "after": {**before, "status": status}, "op": "u",
                       "ts_ms": 1, "source": {"table": table, "lsn": 1, "txId": 1,
                                              "ts_ms": 1, "snapshot": "false"}}).encode()


@pytest.mark.parametrize(("topic", "before", "table"), [
    (settings.payments_topic, PAYMENT, "payments"),
    (settings.refunds_topic, REFUND, "refunds"),
])
def test_a_change_implies_the_journal_the_worker_posts(
    topic: str, before: dict[str, Any], table: str
) -> None:
    key = id_key(before["id"])
    value = moved(before, "succeeded", table)
    rebuilt = journal_of(topic, key, value)
    worker_posts = journal_for_change(decode_change(key, value),
                                      payment=topic == settings.payments_topic)
    assert rebuilt is not None and rebuilt == worker_posts
    assert rebuilt.journal_id == f"jrn_{table[:-1]}_{before['id']}"
    # Any other move posts nothing, in the rebuild as in the worker.
    assert journal_of(topic, key, moved(before, "failed", table)) is None


def test_the_changelog_is_read_with_the_balances_tables_own_serializers() -> None:
    balances = bare_worker(settings).tables.balances

    def record(account: str, value: int | None) -> tuple[bytes, bytes | None]:
        return (codecs.dumps(balances.key_serializer, account),
                None if value is None else codecs.dumps(balances.value_serializer, value))

    table = changelog_balances([record("stripe_clearing:usd", 1000),
                                record("merchant_available:acct_1:usd", -1000),
                                record("stripe_clearing:usd", 1500),  # the last value wins
                                record("merchant_available:acct_1:eur", -7),
                                record("merchant_available:acct_1:eur", None)])  # a tombstone
    assert table == {"stripe_clearing:usd": 1500, "merchant_available:acct_1:usd": -1000}
    assert changelog_topic(settings.faust_app_id) == f"{settings.faust_app_id}-balances-changelog"
    with pytest.raises(StreamsError):
        changelog_balances([(b'{"id": "pay_1"}', b"1")])


def test_faust_differences_for_one_merchant_leave_out_the_shared_accounts() -> None:
    rebuilt = {"stripe_clearing:usd": 1000, "merchant_available:acct_1:usd": -1000}
    table = {"stripe_clearing:usd": 90_000, "merchant_available:acct_1:usd": -1000,
             "merchant_available:acct_1:eur": -5, "merchant_available:acct_10:usd": -89_000}
    assert faust_differences(rebuilt, table, "acct_1") == (
        2, {"merchant_available:acct_1:eur": (0, -5)})
    compared, differ = faust_differences(rebuilt, table, None)
    assert compared == 4 and differ == {"stripe_clearing:usd": (1000, 90_000),
                                        "merchant_available:acct_1:eur": (0, -5),
                                        "merchant_available:acct_10:usd": (0, -89_000)}
    assert faust_differences(rebuilt, dict(rebuilt), None) == (2, {})


def test_a_faust_difference_alone_makes_the_books_different() -> None:
    diff = Diff(3, 3, faust_table="paystream-balances-changelog", faust_accounts=2)
    assert diff.identical and diff.lines() == []
    assert "identical" in diff.summary() and "ledger_rebuild" in diff.summary()
    diff.faust_differ = {"merchant_available:acct_1:usd": (-1000, -1001)}
    assert not diff.identical
    assert diff.lines() == ["Faust balances table: merchant_available:acct_1:usd: "
                            "rebuilt -1000, table -1001"]
    report = diff.as_json()
    assert report["identical"] is False and report["scratch_schema"] == "ledger_rebuild"
    assert report["faust_balances_differ"] == {"merchant_available:acct_1:usd": [-1000, -1001]}
    assert json.loads(json.dumps(report)) == report
