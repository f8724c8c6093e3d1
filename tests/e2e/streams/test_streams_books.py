"""`paystream reconcile` and `paystream ledger rebuild --verify` against the real stack.

Drift is made for real: rows moved by hand in Postgres, PaymentIntents and
Refunds made directly at a Stripe peer with our metadata. That drift is planted
in books of the test's own (testkit/own_books.py: a localstripe and a database of
its own, dropped at the end), never in the stack's, which `paystream reconcile`
over the stack must find clean after the tests; no worker reads them, so nothing
in the pipeline repairs them behind the test's back. The rebuild tests run the
real pipeline on the stack and put back what they remove or alter in its ledger.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.merchants import NewMerchant
from paystream.domain import new_id
from paystream.domain.ledger import journal_for_payment, journal_for_refund
from paystream.settings import Settings
from streams.adapters import postgres
from streams.dead_letters.replay import read_all
from streams.messages import BalanceDelta
from streams.ops import ledger_rebuild
from testkit.own_books import OwnBooks
from testkit.rows import create_merchant, merchant_id
from testkit.waiting import eventually
from tests.e2e.streams.streams_harness import Db, Pipeline, produce, stripe

ROOT = Path(__file__).resolve().parents[3]


def paystream(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "paystream"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False,
                          env=os.environ.copy() if env is None else env)
    return done.returncode, done.stdout + done.stderr


def reconcile(own: OwnBooks, merchant: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """`paystream reconcile` over the test's own books (its environment names them)."""
    rc, out = paystream("reconcile", "--merchant", merchant, "--settle", "0", "--json", *extra,
                        env=own.env)
    assert rc in (0, 1), out
    return rc, json.loads(out.strip().splitlines()[-1])


async def outsider(db: Db) -> NewMerchant:
    """A merchant no worker of this session looks at."""
    return await create_merchant(db.conn, "books", merchant_id=merchant_id("acct_books"))


async def row(db: Db, merchant: NewMerchant, status: str, amount: int = 1000,
              pi: str | None = None) -> str:
    payment_id = new_id("pay")
    await db.conn.execute(
        "INSERT INTO payments (id, merchant_id, amount, currency, status, customer, "
        "payment_method, idempotency_key, stripe_payment_intent_id) "
        "VALUES (%s, %s, %s, 'usd', %s, 'c_books', 'pm_card_visa', %s, %s)",
        (payment_id, merchant.id, amount, status, new_id("idem"), pi))
    return payment_id


async def charge(settings: Settings, payment_id: str, merchant: NewMerchant,
                 amount: int = 1000) -> str:
    """A confirmed PaymentIntent made directly at the Stripe peer, with our metadata."""
    pi = await stripe(settings, "POST", "/v1/payment_intents", {
        "amount": str(amount), "currency": "usd", "payment_method": "pm_card_visa",
        "confirm": "true", "metadata[payment_id]": payment_id,
        "metadata[merchant_id]": merchant.id})
    assert pi["status"] == "succeeded", pi
    return str(pi["id"])


async def journal(db: Db, payment_id: str, merchant: NewMerchant, amount: int = 1000) -> None:
    """What the ledger agent posts for a succeeded payment."""
    await postgres.post_journals(db.conn, [journal_for_payment(payment_id, merchant.id, amount,
                                                            "usd")])


def ids_of(report: dict[str, Any], kind: str) -> list[list[str]]:
    return [d["ids"] for d in report["drifts"] if d["kind"] == kind]


async def test_reconcile_reports_every_kind_of_drift_with_its_ids(own: OwnBooks) -> None:
    db, settings = Db(own.conn), own.settings
    merchant = await outsider(db)
    rc, report = reconcile(own, merchant.id)
    assert (rc, report["drifts"]) == (0, [])  # nothing yet: clean
    # Its Stripe has no webhook: it tells no API anything.
    good = await row(db, merchant, "pending")
    good_pi = await charge(settings, good, merchant)
    await db.conn.execute("UPDATE payments SET status = 'succeeded', "
                          "stripe_payment_intent_id = %s WHERE id = %s", (good_pi, good))
    await journal(db, good, merchant)
    canceled = await row(db, merchant, "canceled")
    canceled_pi = await charge(settings, canceled, merchant)
    never_charged = await row(db, merchant, "succeeded")
    await journal(db, never_charged, merchant)
    twice = await row(db, merchant, "succeeded")
    first = await charge(settings, twice, merchant)
    second = await charge(settings, twice, merchant)
    await journal(db, twice, merchant)
    other_amount = await row(db, merchant, "succeeded", amount=1000)
    other_pi = await charge(settings, other_amount, merchant, amount=999)
    await journal(db, other_amount, merchant)
    ghost = new_id("pay")
    ghost_pi = await charge(settings, ghost, merchant)
    unjournalled = await row(db, merchant, "succeeded")
    unjournalled_pi = await charge(settings, unjournalled, merchant)
    failed = await row(db, merchant, "failed")
    await journal(db, failed, merchant)  # a journal for a payment that did not succeed

    rc, report = reconcile(own, merchant.id)
    assert rc == 1
    assert ids_of(report, "intent_for_unchargeable_payment") == [[canceled, canceled_pi]]
    assert [canceled, canceled_pi] in ids_of(report, "charged_not_succeeded")
    assert ids_of(report, "succeeded_not_charged") == [[never_charged]]
    assert ids_of(report, "duplicate_payment_intents") == [[twice, first, second]]
    assert ids_of(report, "amount_mismatch") == [[other_amount, other_pi]]
    assert ids_of(report, "unknown_payment_intent") == [[ghost_pi]]
    assert ids_of(report, "journals_not_one") == [[unjournalled]]
    assert ids_of(report, "journal_without_source") == [[failed]]
    assert ids_of(report, "balance_mismatch") == [[merchant.id]]
    flagged = {i for d in report["drifts"] for i in d["ids"]}
    assert good not in flagged and good_pi not in flagged and unjournalled_pi not in flagged
    assert all(not d["fixable"] for d in report["drifts"]
               if d["kind"] != "charged_not_succeeded")


async def test_fix_applies_the_guarded_moves_and_a_second_run_is_clean(own: OwnBooks) -> None:
    db, settings = Db(own.conn), own.settings
    merchant = await outsider(db)
    # Charged at Stripe, but the write-back never happened (its Stripe has no webhook):
    # still pending here.
    stuck = await row(db, merchant, "pending")
    stuck_pi = await charge(settings, stuck, merchant)
    refunded = await row(db, merchant, "pending")
    refunded_pi = await charge(settings, refunded, merchant)
    rc, report = reconcile(own, merchant.id, "--fix")
    assert rc == 0, report  # every drift found was fixed
    assert sorted([[stuck, stuck_pi], [refunded, refunded_pi]]) == sorted(
        d["ids"] for d in report["drifts"] if d["fixed"])
    assert await db.status(stuck) == "succeeded"
    # What the ledger agent posts for the moves (the worker would, from their changes).
    await journal(db, stuck, merchant)
    await journal(db, refunded, merchant)

    # A refund Stripe made whose answer never reached us: still pending here.
    refund_id = new_id("re")
    await db.conn.execute(
        "INSERT INTO refunds (id, payment_id, merchant_id, amount, currency, status) "
        "VALUES (%s, %s, %s, 400, 'usd', 'pending')", (refund_id, refunded, merchant.id))
    stripe_refund = await stripe(settings, "POST", "/v1/refunds", {
        "payment_intent": refunded_pi, "amount": "400",
        "metadata[refund_id]": refund_id, "metadata[payment_id]": refunded})
    rc, report = reconcile(own, merchant.id, "--fix")
    assert rc == 0, report
    assert [d["ids"] for d in report["drifts"] if d["fixed"]] == [
        [refund_id, stripe_refund["id"]]]
    await postgres.post_journals(db.conn, [journal_for_refund(refund_id, refunded, merchant.id,
                                                           400, "usd")])
    rc, report = reconcile(own, merchant.id)
    assert (rc, report["drifts"]) == (0, [])


async def settled_books(db: Db, pipeline: Pipeline, merchant: NewMerchant, payments: int,
                        refunds: int) -> tuple[list[str], list[str]]:
    """Payments through the worker, refunds of the first succeeded ones; waits until every
    journal is posted and the worker's Faust balances changelog holds the merchant's
    balance. The ids of the succeeded payments and of the refunds."""
    paid = [await db.payment(merchant, amount=1000 + i) for i in range(payments)]
    await eventually(lambda: _count_terminal(db, paid), timeout=240, what="payments")
    succeeded = [r["id"] for r in await db.all(
        "SELECT id FROM payments WHERE id = ANY(%s) AND status = 'succeeded'", paid)]
    refunded = [await db.refund(p, amount=300) for p in succeeded[:refunds]]

    async def journalled() -> bool:
        rows = await db.all("SELECT count(*) AS n FROM ledger_journals WHERE merchant_id = %s",
                            merchant.id)
        return rows[0]["n"] == len(succeeded) + len(refunded)

    await eventually(journalled, timeout=240, what="every journal posted")
    balance = await db.one("SELECT sum(CASE direction WHEN 'debit' THEN amount "
                           "ELSE -amount END) AS b FROM ledger_entries WHERE account = %s",
                           account_of(merchant))
    await eventually(lambda: _faust_balance_is(pipeline, account_of(merchant), int(balance["b"])),
                     timeout=60, what="the Faust balances table caught up")
    return succeeded, refunded


def account_of(merchant: NewMerchant) -> str:
    return f"merchant_available:{merchant.id}:usd"


async def _faust_balance_is(pipeline: Pipeline, account: str, balance: int) -> bool:
    table = await ledger_rebuild.faust_balances(pipeline.settings, pipeline.app_id)
    return table.get(account) == balance


def rebuild(pipeline: Pipeline, merchant: NewMerchant, *extra: str) -> tuple[int, str]:
    return paystream("ledger", "rebuild", "--verify", "--merchant", merchant.id,
                     "--app-id", pipeline.app_id, *extra)


class LedgerKeeper:
    """Journals of the stack's live ledger as they were, put back at the end of the test
    whatever it did to them behind the ledger's back: the stack's books stay as the
    pipeline made them. A superuser bypassing the append-only triggers, as the test."""

    def __init__(self) -> None:
        self.kept: list[tuple[list[str], str, str]] = []

    @staticmethod
    async def _admin() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(os.environ["DATABASE_ADMIN_URL"],
                                                     autocommit=True)

    async def keep(self, *journal_ids: str) -> None:
        ids = list(journal_ids)
        async with await self._admin() as admin:
            cur = await admin.execute(
                "SELECT (SELECT json_agg(j)::text FROM ledger_journals j WHERE id = ANY(%s)), "
                "(SELECT json_agg(e)::text FROM ledger_entries e WHERE journal_id = ANY(%s))",
                (ids, ids))
            found = await cur.fetchone()
        assert found is not None and found[0] and found[1], f"no journals {ids}"
        self.kept.append((ids, found[0], found[1]))

    async def put_back(self) -> None:
        async with await self._admin() as admin:
            for ids, journals, entries in reversed(self.kept):
                async with admin.transaction():
                    await admin.execute("SET LOCAL session_replication_role = replica")
                    await admin.execute("DELETE FROM ledger_entries WHERE journal_id = ANY(%s)",
                                        (ids,))
                    await admin.execute("DELETE FROM ledger_journals WHERE id = ANY(%s)", (ids,))
                    await admin.execute(
                        "INSERT INTO ledger_journals SELECT * FROM "
                        "json_populate_recordset(NULL::ledger_journals, %s::json)", (journals,))
                    await admin.execute(
                        "INSERT INTO ledger_entries SELECT * FROM "
                        "json_populate_recordset(NULL::ledger_entries, %s::json)", (entries,))


@pytest.fixture(name="ledger_kept")
async def ledger_kept_fixture() -> AsyncIterator[LedgerKeeper]:
    keeper = LedgerKeeper()
    try:
        yield keeper
    finally:
        await keeper.put_back()


def readme_repost_sql() -> str:
    """The README's statement that re-posts missing journals from the scratch schema."""
    blocks = (ROOT / "README.md").read_text().split("```sql\n")[1:]
    found = [b.split("```")[0] for b in blocks if "ledger_rebuild.ledger_journals" in b]
    assert len(found) == 1, "README.md: one sql block re-posts from ledger_rebuild"
    return found[0]


async def test_ledger_rebuilt_into_the_scratch_schema_matches_until_a_journal_is_removed(
    pipeline: Pipeline, db: Db, settings: Settings, ledger_kept: LedgerKeeper
) -> None:
    merchant = await db.merchant(None)
    succeeded, refunded = await settled_books(db, pipeline, merchant, payments=250, refunds=80)
    rc, out = rebuild(pipeline, merchant)
    assert rc == 0, out
    assert "identical" in out and "schema ledger_rebuild" in out
    # The scratch ledger stays for inspection, holding exactly the rebuilt journals.
    expected = {f"jrn_payment_{p}" for p in succeeded} | {f"jrn_refund_{r}" for r in refunded}
    rows = await db.all("SELECT j.id, count(e.id) AS entries FROM ledger_rebuild.ledger_journals j "
                        "JOIN ledger_rebuild.ledger_entries e ON e.journal_id = j.id "
                        "GROUP BY j.id")
    assert {r["id"] for r in rows} == expected
    assert all(r["entries"] == 2 for r in rows)

    gone = f"jrn_payment_{succeeded[7]}"
    altered = f"jrn_refund_{refunded[3]}"
    await ledger_kept.keep(gone, altered)  # put back at the end, whatever happens here
    async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_ADMIN_URL"],
                                                     autocommit=True) as admin:
        async with admin.transaction():
            # The ledger is append-only; only a superuser bypassing triggers can do this.
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute("DELETE FROM ledger_entries WHERE journal_id = %s", (gone,))
            await admin.execute("DELETE FROM ledger_journals WHERE id = %s", (gone,))
    rc, out = rebuild(pipeline, merchant)
    assert rc == 1, out
    assert f"missing from the live ledger: {gone}" in out
    rc, out = rebuild(pipeline, merchant, "--json")
    report = json.loads(out.strip().splitlines()[-1])
    assert rc == 1 and report["only_rebuilt"] == [gone], out
    assert (report["only_live"], report["entries_differ"]) == ([], [])
    assert set(report["balances_differ"]) == {account_of(merchant), "stripe_clearing:usd"}
    # The Faust table never lost the journal's entries: it still agrees with the rebuild.
    assert report["faust_balances_differ"] == {} and report["faust_accounts"] == 1

    # The README's recovery: re-post what is missing from the scratch schema, as the
    # application role; twice, since it must be safe to re-run.
    for _ in range(2):
        await db.conn.execute(readme_repost_sql())
    rc, out = rebuild(pipeline, merchant)
    assert rc == 0, out

    # A journal whose entries were rewritten behind the ledger's back (superuser again).
    async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_ADMIN_URL"],
                                                     autocommit=True) as admin:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute("UPDATE ledger_entries SET amount = amount + 1 "
                                "WHERE journal_id = %s", (altered,))
    rc, out = rebuild(pipeline, merchant)
    assert rc == 1 and f"entries differ: {altered}" in out, out
    assert "missing from the live ledger" not in out


async def test_rebuild_reports_a_faust_balance_that_moved_without_a_journal(
    pipeline: Pipeline, db: Db, settings: Settings
) -> None:
    merchant = await db.merchant(None)
    await settled_books(db, pipeline, merchant, payments=6, refunds=2)
    rc, out = rebuild(pipeline, merchant)
    assert rc == 0, out
    account = account_of(merchant)
    before = (await ledger_rebuild.faust_balances(settings, pipeline.app_id))[account]

    # An entry the balances agent applies although no journal was ever posted for it.
    stray = BalanceDelta(account, "usd", {f"jrn_stray_{secrets.token_hex(4)}": -7})
    # Keyed like the ledger agent's (tables.json_key; importing it would build a Faust app
    # here), so it lands on the partition that holds the account's balance.
    topic = f"{pipeline.app_id}-balance-deltas"
    partition, offset = await produce(settings, topic, json.dumps(account).encode(),
                                      stray.dumps())
    try:
        await eventually(lambda: _faust_balance_is(pipeline, account, before - 7),
                         timeout=60, what="the stray delta applied")
    except AssertionError as err:
        # Say which way it went: not applied (before), or applied twice (before - 14).
        now = (await ledger_rebuild.faust_balances(settings, pipeline.app_id)).get(account)
        letters = [e.body for e in await read_all(settings.kafka_bootstrap,
                                                  pipeline.settings.dlq_topic)
                   if (e.body.get("topic"), e.body.get("partition"), e.body.get("offset"))
                   == (topic, partition, offset)]
        raise AssertionError(f"{err}; the Faust balance is {now}, {before} before the "
                             f"stray delta of -7; its dead letters: {letters}") from err
    rc, out = rebuild(pipeline, merchant, "--json")
    report = json.loads(out.strip().splitlines()[-1])
    assert rc == 1, out
    assert report["faust_balances_differ"] == {account: [before, before - 7]}
    # Postgres knows nothing of it: the live ledger still matches the rebuild.
    assert (report["only_rebuilt"], report["only_live"], report["entries_differ"],
            report["balances_differ"]) == ([], [], [], {})
    rc, out = rebuild(pipeline, merchant)
    assert f"Faust balances table: {account}: rebuilt {before}, table {before - 7}" in out


async def _count_terminal(db: Db, ids: list[str]) -> bool:
    rows = await db.all("SELECT count(*) AS n FROM payments WHERE id = ANY(%s) "
                        "AND status IN ('succeeded', 'failed', 'blocked', 'canceled')", ids)
    return rows[0]["n"] == len(ids)
