"""Posting journals with their origin, against a real Postgres of the test's own.

The balances agent recognises a journal that comes again by the origin the ledger
stored when it first posted it: posting must store it for a new journal, and
answer a journal posted before with the origin it was first posted with (not the
offset of the change that brought it again), or with none if it predates origins.
"""

from __future__ import annotations

from paystream.domain import journal_for_payment, new_id
from streams.adapters import postgres
from streams.adapters.postgres import Posted
from testkit.own_books import OwnBooks
from testkit.rows import create_merchant, merchant_id


async def test_a_journal_keeps_the_origin_it_was_first_posted_with(own: OwnBooks) -> None:
    merchant = (await create_merchant(own.conn, "origin",
                                      merchant_id=merchant_id("acct_origin"))).id
    first = journal_for_payment(new_id("pay"), merchant, 1000, "usd")
    second = journal_for_payment(new_id("pay"), merchant, 250, "usd")
    posted = await postgres.post_journals(own.conn, [first], {first.journal_id: (3, 40)})
    assert posted == [Posted(first.journal_id, True, (3, 40))]

    # The first again, re-emitted at a new offset, beside a new one.
    posted = await postgres.post_journals(
        own.conn, [first, second], {first.journal_id: (3, 97), second.journal_id: (3, 98)})
    assert sorted(posted, key=lambda p: p.new) == [
        Posted(first.journal_id, False, (3, 40)), Posted(second.journal_id, True, (3, 98))]
    cur = await own.conn.execute(
        "SELECT count(*) FROM ledger_entries WHERE journal_id = ANY(%s)",
        ([first.journal_id, second.journal_id],))
    assert (await cur.fetchone()) == (4,)  # two entries each, posted once


async def test_a_journal_posted_without_an_origin_answers_none(own: OwnBooks) -> None:
    merchant = (await create_merchant(own.conn, "no-origin",
                                      merchant_id=merchant_id("acct_noorigin"))).id
    journal = journal_for_payment(new_id("pay"), merchant, 500, "usd")
    assert await postgres.post_journals(own.conn, [journal]) == [
        Posted(journal.journal_id, True, None)]
    assert await postgres.post_journals(own.conn, [journal], {journal.journal_id: (0, 5)}) == [
        Posted(journal.journal_id, False, None)]
