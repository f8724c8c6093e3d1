"""A database of a benchmark's own on the stack's primary: its payments never enter the books.

A benchmark that charges its payments through a Stripe of its own (the
Stripe-shaped peer of bench/stripe_bench.py), or a test that plants drift on
purpose (testkit/own_books.py), would leave, in the stack's
database, succeeded payments and journals whose PaymentIntents the stack's
Stripe never saw: drift that `paystream reconcile` reports for ever and cannot
fix (the ledger is append-only). So such a bench runs on a database of its own
on the same primary (same server, same WAL, same replicas: the cost measured is
production's), made from db/migrations, with a CDC feed decoding it
(testkit/cdc_feed.py, `dbname=`), and dropped at the end with everything in
it. A database left by a killed run is dropped by the next one (its owner pid
is in its name).
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from paystream.settings import Settings
from testkit.cdc_feed import pid_alive, with_dbname
from testkit.rows import create_merchant

# Merchants besides the bench's and the history's, as a production table has.
OTHER_MERCHANTS = 2_000

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "db" / "migrations"
NAME = re.compile(r"^paystream_bench_(?P<pid>[0-9]+)_[0-9a-f]+$")


async def _drop(admin_url: str, name: str) -> None:
    """Drop database name: its replication slots first (a slot keeps a database from
    being dropped, and only a session in it can drop its logical slot), then the
    database, ending the sessions still in it."""
    async with await psycopg.AsyncConnection.connect(with_dbname(admin_url, name),
                                                     autocommit=True) as conn:
        await conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                           "WHERE database = current_database() AND active_pid IS NOT NULL")
        cur = await conn.execute("SELECT slot_name FROM pg_replication_slots "
                                 "WHERE database = current_database()")
        for (slot,) in await cur.fetchall():
            try:
                await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            except psycopg.errors.ObjectInUse:
                pass  # its session is still ending: DROP DATABASE below says so if it stays
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


async def sweep(admin_url: str) -> list[str]:
    """Drop the bench databases whose owner process is gone; their names."""
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT datname FROM pg_database")
        names = [n for (n,) in await cur.fetchall()
                 if (m := NAME.match(n)) and not pid_alive(int(m["pid"]))]
    for name in names:
        await _drop(admin_url, name)
    return names


class OwnDatabase:
    """`async with OwnDatabase(settings, admin_url) as db:` a fresh database with the
    schema of db/migrations, owned by the application role; db.settings point at it,
    db.name is its name (for the CDC feed). Dropped on exit."""

    def __init__(self, settings: Settings, admin_url: str, *, history: int = 50_000) -> None:
        """history: settled payments (with their fraud decisions, Stripe submissions
        and journals) the database starts with, then analysed: production's tables
        are not empty, and on empty ones the planner's first plans scan them."""
        self.name = f"paystream_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.admin_url = admin_url
        self.history = history
        self.settings = dataclasses.replace(
            settings, database_url=with_dbname(settings.database_url, self.name))
        self._app_user = psycopg.conninfo.conninfo_to_dict(settings.database_url).get(
            "user", "paystream")

    async def __aenter__(self) -> OwnDatabase:
        await sweep(self.admin_url)
        async with await psycopg.AsyncConnection.connect(self.admin_url,
                                                         autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(self.name), sql.Identifier(str(self._app_user))))
        try:
            # As the application role, as db/setup.sh applies them: it owns the tables.
            async with await psycopg.AsyncConnection.connect(self.settings.database_url,
                                                             autocommit=True) as conn:
                for migration in sorted(MIGRATIONS.glob("[0-9]*.sql")):
                    await conn.execute(migration.read_text().encode())
                await self._fill(conn)
        except BaseException:
            await _drop(self.admin_url, self.name)
            raise
        return self

    async def _fill(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.history <= 0:
            return
        await create_merchant(conn, "history", merchant_id="acct_history")
        # Other merchants too: with one or two rows, every foreign-key check of a
        # payment or journal reads merchants by a sequential scan (cheapest on a tiny
        # table), which production's merchants table never gets.
        await conn.execute(
            "INSERT INTO merchants (id, name, api_key_hash, webhook_secret) "
            "SELECT 'acct_others' || n, 'other ' || n, 'hash_others' || n, 'whsec_others' "
            "FROM generate_series(1, %s) AS n", (OTHER_MERCHANTS,))
        await conn.execute(
            "INSERT INTO payments (id, merchant_id, amount, currency, status, customer, "
            "  payment_method, stripe_payment_intent_id, created_at, updated_at) "
            "SELECT 'pay_history' || n, 'acct_history', 1050, 'usd', 'canceled', "
            "  'c_history' || n, 'pm_card_visa', 'pi_history' || n, "
            "  now() - interval '2 days', now() - interval '2 days' "
            "FROM generate_series(1, %s) AS n", (self.history,))
        await conn.execute(
            "INSERT INTO fraud_decisions (payment_id, approved, score) "
            "SELECT id, true, 0 FROM payments WHERE merchant_id = 'acct_history'")
        await conn.execute(
            "INSERT INTO stripe_submissions (object_type, object_id, attempts, stripe_id) "
            "SELECT 'payment', id, 1, stripe_payment_intent_id FROM payments "
            "WHERE merchant_id = 'acct_history'")
        # And their journals: an empty ledger analysed as empty gets sequential scans
        # planned (and cached by every session) for its foreign-key and balance checks.
        await conn.execute(
            "INSERT INTO ledger_journals (id, source_type, source_id, payment_id, merchant_id, "
            "  currency) SELECT 'jrn_payment_' || id, 'payment', id, id, merchant_id, 'usd' "
            "FROM payments WHERE merchant_id = 'acct_history'")
        await conn.execute(
            "INSERT INTO ledger_entries (journal_id, merchant_id, account, direction, amount, "
            "  currency) SELECT j.id, j.merchant_id, e.account, e.direction, 1050, 'usd' "
            "FROM ledger_journals j, (VALUES ('stripe_clearing:usd', 'debit'), "
            "  ('merchant_available:acct_history:usd', 'credit')) AS e(account, direction)")
        await conn.execute("ANALYZE")

    async def __aexit__(self, kind: type[BaseException] | None, err: BaseException | None,
                        tb: TracebackType | None) -> None:
        await _drop(self.admin_url, self.name)

    def describe(self) -> str:
        others = f" and {OTHER_MERCHANTS} other merchants" if self.history > 0 else ""
        return (f"database {self.name} of its own, {self.history} settled payments{others} "
                "in it (dropped at the end)")
