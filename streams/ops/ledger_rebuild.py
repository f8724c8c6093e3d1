"""The ledger as a pure function of the change stream: rebuild it into a scratch schema and compare.

The payments and refunds change topics are read from their earliest offset up
to their end at the start; every change that moves a row into ``succeeded``
makes the journal the worker would post (same domain functions, same ids).
Those journals are posted into the scratch schema ``ledger_rebuild`` (tables
made ``LIKE`` the live ones, dropped and made again by each run, left in place
afterwards) with the worker's own ``postgres.post_journals``. SQL then compares
the scratch ledger with the live ``ledger_journals``/``ledger_entries``: the
journals on either side only, journals whose entries differ, and account
balances. Last, the rebuilt balances are compared with the worker's Faust
``balances`` table, read from its changelog topic.

Kafka's retention bounds what can be rebuilt: a topic that dropped old
segments rebuilds only what it still holds (see ``retention.ms``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from paystream.domain import Journal
from paystream.settings import Settings
from streams.adapters import postgres
from streams.adapters.cdc import decode_change
from streams.adapters.tables import balance_amount
from streams.adapters.topic_reader import partitions_of, read_topic
from streams.errors import StreamsError
from streams.journals import journal_for_change

SCRATCH_SCHEMA = "ledger_rebuild"
# The migrations create the ledger in the application role's default schema.
LIVE_SCHEMA = "public"
# Held for the whole run: two runs at once would drop each other's scratch schema.
_LOCK = "SELECT pg_try_advisory_lock(hashtext('paystream ledger rebuild'))"
# Journals per scratch transaction; progress is reported after each.
_BATCH = 500

Balances = dict[str, tuple[int, int]]


@dataclass
class Diff:
    rebuilt: int
    live: int
    only_rebuilt: list[str] = field(default_factory=list)
    only_live: list[str] = field(default_factory=list)
    entries_differ: list[str] = field(default_factory=list)
    balances_differ: Balances = field(default_factory=dict)
    undecodable: int = 0
    scratch_schema: str = SCRATCH_SCHEMA
    # The Faust balances table: its changelog topic, the accounts compared, and
    # those whose rebuilt balance differs from the table's (rebuilt, table).
    faust_table: str = ""
    faust_accounts: int = 0
    faust_differ: Balances = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def identical(self) -> bool:
        return not (self.only_rebuilt or self.only_live or self.entries_differ
                    or self.balances_differ or self.faust_differ)

    def lines(self) -> list[str]:
        out = [f"missing from the live ledger: {j}" for j in self.only_rebuilt]
        out += [f"in the live ledger, not implied by the change stream: {j}"
                for j in self.only_live]
        out += [f"entries differ: {j}" for j in self.entries_differ]
        out += [f"balance of {account}: rebuilt {r}, live {live}"
                for account, (r, live) in sorted(self.balances_differ.items())]
        out += [f"Faust balances table: {account}: rebuilt {r}, table {table}"
                for account, (r, table) in sorted(self.faust_differ.items())]
        return out

    def summary(self) -> str:
        verdict = "identical" if self.identical else "DIFFERENT"
        return (f"{self.rebuilt} journals rebuilt from the change stream into schema "
                f"{self.scratch_schema}, {self.live} live, {self.faust_accounts} Faust "
                f"balances compared ({self.faust_table}) in {self.seconds:.1f}s: {verdict}"
                + (f" ({self.undecodable} undecodable messages skipped)"
                   if self.undecodable else ""))

    def as_json(self) -> dict[str, Any]:
        return {"identical": self.identical, "rebuilt": self.rebuilt, "live": self.live,
                "only_rebuilt": self.only_rebuilt, "only_live": self.only_live,
                "entries_differ": self.entries_differ,
                "balances_differ": {k: list(v) for k, v in self.balances_differ.items()},
                "faust_balances_differ": {k: list(v) for k, v in self.faust_differ.items()},
                "faust_table": self.faust_table, "faust_accounts": self.faust_accounts,
                "scratch_schema": self.scratch_schema, "undecodable": self.undecodable,
                "seconds": round(self.seconds, 2)}


# --- the change stream ------------------------------------------------------------------


def journal_of(topic: str, key: bytes | None, value: bytes | None) -> Journal | None:
    """The journal one change message implies, exactly as the worker's ledger posts it."""
    return journal_for_change(decode_change(key, value), payment=topic.endswith(".payments"))


async def replay(settings: Settings, merchant: str | None,
                 progress: Callable[[str], None]) -> tuple[dict[str, Journal], int]:
    """Journals implied by the change topics, by id (a redelivered change implies the same)."""
    journals: dict[str, Journal] = {}
    undecodable = 0
    for topic in (settings.payments_topic, settings.refunds_topic):
        records = await read_topic(settings.kafka_bootstrap, topic, timeout=30.0)
        progress(f"read {len(records)} change events of {topic}")
        for record in records:
            try:
                journal = journal_of(topic, record.key, record.value)
            except Exception:  # the worker dead-letters these too
                undecodable += 1
                continue
            if journal is not None and (merchant is None or journal.merchant_id == merchant):
                journals.setdefault(journal.journal_id, journal)
    return journals, undecodable


# --- the scratch ledger -----------------------------------------------------------------


def _q(text: str) -> sql.Composed:
    """text with {scratch} and {live} as the two schemas' quoted names."""
    return sql.SQL(text).format(scratch=sql.Identifier(SCRATCH_SCHEMA),
                                live=sql.Identifier(LIVE_SCHEMA))


# LIKE ... INCLUDING ALL copies columns, defaults, CHECKs, the primary key, the
# unique (source_type, source_id) and the indexes: what makes posting idempotent.
# Not copied: foreign keys (the journal one is added back; merchants stay live
# only), the append-only and balanced-at-commit triggers (the domain's Journal
# refuses an unbalanced journal before it is posted).
_CREATE = [
    "DROP SCHEMA IF EXISTS {scratch} CASCADE",
    "CREATE SCHEMA {scratch}",
    "COMMENT ON SCHEMA {scratch} IS 'paystream ledger rebuild --verify: the ledger rebuilt "
    "from the change stream; dropped and made again by each run'",
    "CREATE TABLE {scratch}.ledger_journals (LIKE {live}.ledger_journals INCLUDING ALL)",
    "CREATE TABLE {scratch}.ledger_entries (LIKE {live}.ledger_entries INCLUDING ALL)",
    # The copied default draws from the live sequence: rebuilt rows must not use up live ids.
    "CREATE SEQUENCE {scratch}.ledger_entries_id_seq OWNED BY {scratch}.ledger_entries.id",
    "ALTER TABLE {scratch}.ledger_entries ALTER COLUMN id SET DEFAULT "
    f"nextval('{SCRATCH_SCHEMA}.ledger_entries_id_seq')",
    "ALTER TABLE {scratch}.ledger_entries ADD FOREIGN KEY (journal_id) "
    "REFERENCES {scratch}.ledger_journals (id)",
]


async def create_scratch(conn: psycopg.AsyncConnection[Any]) -> None:
    """Drop the scratch schema (the previous run's) and make empty ledger tables in it."""
    async with conn.transaction():
        for statement in _CREATE:
            await conn.execute(_q(statement))


async def post_scratch(settings: Settings, journals: list[Journal],
                       progress: Callable[[str], None]) -> None:
    """Post journals into the scratch schema with the worker's own posting SQL."""
    # The only schema on the path: the unqualified table names of postgres.post_journals
    # resolve to the scratch tables, and anything else it might touch fails loudly
    # instead of writing to the live ledger.
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True, options=f"-c search_path={SCRATCH_SCHEMA}"
    ) as conn:
        for start in range(0, len(journals), _BATCH):
            await postgres.post_journals(conn, journals[start:start + _BATCH])
            progress(f"posted {min(start + _BATCH, len(journals))}/{len(journals)} journals "
                     f"into schema {SCRATCH_SCHEMA}")


_ONLY_REBUILT = """
SELECT r.id FROM {scratch}.ledger_journals r
WHERE NOT EXISTS (SELECT FROM {live}.ledger_journals l WHERE l.id = r.id) ORDER BY r.id"""

_ONLY_LIVE = """
SELECT l.id FROM {live}.ledger_journals l
WHERE (%(m)s::text IS NULL OR l.merchant_id = %(m)s)
  AND NOT EXISTS (SELECT FROM {scratch}.ledger_journals r WHERE r.id = l.id) ORDER BY l.id"""

# A journal's entries as one sorted array, so a missing, extra or changed entry shows.
_ENTRIES_OF = """(SELECT array_agg((e.account, e.direction, e.amount, e.currency)::text
                   ORDER BY e.account, e.direction, e.amount, e.currency)
            FROM {schema}.ledger_entries e WHERE e.journal_id = r.id)"""
_ENTRIES_DIFFER = f"""
SELECT r.id FROM {{scratch}}.ledger_journals r JOIN {{live}}.ledger_journals l ON l.id = r.id
WHERE {_ENTRIES_OF.format(schema="{scratch}")}
      IS DISTINCT FROM {_ENTRIES_OF.format(schema="{live}")}
ORDER BY r.id"""

_SIGNED = "sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END)::bigint AS balance"
_REBUILT_BALANCES = f"SELECT account, {_SIGNED} FROM {{scratch}}.ledger_entries GROUP BY account"
_BALANCES_DIFFER = f"""
WITH r AS ({_REBUILT_BALANCES}), l AS (
    SELECT account, {_SIGNED} FROM {{live}}.ledger_entries
    WHERE %(m)s::text IS NULL OR merchant_id = %(m)s GROUP BY account)
SELECT account, coalesce(r.balance, 0), coalesce(l.balance, 0) FROM r FULL JOIN l USING (account)
WHERE coalesce(r.balance, 0) <> coalesce(l.balance, 0) ORDER BY account"""

_COUNTS = """
SELECT (SELECT count(*) FROM {scratch}.ledger_journals),
       (SELECT count(*) FROM {live}.ledger_journals
        WHERE %(m)s::text IS NULL OR merchant_id = %(m)s)"""


async def compare(conn: psycopg.AsyncConnection[Any], merchant: str | None,
                  diff: Diff) -> dict[str, int]:
    """Fill diff with the differences between the scratch and the live ledger (one
    snapshot of the live one); the rebuilt balance of every account."""
    params = {"m": merchant}

    async def rows(query: str) -> list[tuple[Any, ...]]:
        cur = await conn.execute(_q(query), params)
        return await cur.fetchall()

    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        [(diff.rebuilt, diff.live)] = await rows(_COUNTS)
        diff.only_rebuilt = [r[0] for r in await rows(_ONLY_REBUILT)]
        diff.only_live = [r[0] for r in await rows(_ONLY_LIVE)]
        diff.entries_differ = [r[0] for r in await rows(_ENTRIES_DIFFER)]
        diff.balances_differ = {a: (int(r), int(live))
                                for a, r, live in await rows(_BALANCES_DIFFER)}
        return {a: int(b) for a, b in await rows(_REBUILT_BALANCES)}


# --- the Faust balances table -----------------------------------------------------------


def changelog_topic(app_id: str) -> str:
    """Where Faust keeps the balances table of a worker group (``<app id>-<table>-changelog``)."""
    return f"{app_id}-balances-changelog"


def changelog_balances(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, int]:
    """The table a changelog holds: the last value of each key wins, a tombstone deletes.

    Keys and values are JSON (adapters/tables.py's ``_JSON`` schema): ``"account"`` -> ``-1050``.
    """
    table: dict[str, int] = {}
    for key, value in records:
        account = json.loads(key or b"null")
        if not isinstance(account, str):
            raise StreamsError(f"a balances changelog key is not an account: {key!r}")
        if value is None:
            table.pop(account, None)
        else:
            table[account] = balance_amount(json.loads(value))
    return table


def faust_differences(rebuilt: Mapping[str, int], table: Mapping[str, int],
                      merchant: str | None) -> tuple[int, Balances]:
    """(accounts compared, {account: (rebuilt, table)} where they differ); absent reads 0.

    For one merchant only its own accounts: the shared stripe_clearing accounts of
    the table hold every merchant's money (chart of accounts: paystream/domain/ledger.py).
    """
    accounts = set(rebuilt) | set(table)
    if merchant is not None:
        accounts = {a for a in accounts if a.startswith(f"merchant_available:{merchant}:")}
    differ = {a: (rebuilt.get(a, 0), table.get(a, 0)) for a in sorted(accounts)
              if rebuilt.get(a, 0) != table.get(a, 0)}
    return len(accounts), differ


async def faust_balances(settings: Settings, app_id: str) -> dict[str, int]:
    """The live balances table of a worker group, read from its changelog to the end."""
    records = await read_topic(settings.kafka_bootstrap, changelog_topic(app_id), timeout=30.0)
    return changelog_balances((r.key, r.value) for r in records)


async def _require_changelog(settings: Settings, app_id: str) -> None:
    # Faust makes the changelog topics as a worker starts: a missing one is a
    # wrong app id, and comparing with an empty table would only mislead.
    topic = changelog_topic(app_id)
    if not await partitions_of(settings.kafka_bootstrap, topic):
        raise StreamsError(f"no topic {topic}: has a worker with FAUST_APP_ID={app_id} "
                           "ever run? (--app-id names another group)")


# --- the whole check --------------------------------------------------------------------


async def verify(settings: Settings, *, merchant: str | None = None, app_id: str | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> Diff:
    """Rebuild from the change stream into the scratch schema and compare with the live
    ledger and with the Faust balances table of app_id (default: the settings')."""
    began = time.monotonic()
    app_id = app_id or settings.faust_app_id
    await _require_changelog(settings, app_id)
    async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                     autocommit=True) as conn:
        locked = await (await conn.execute(_LOCK)).fetchone()
        if not (locked and locked[0]):
            raise StreamsError("another ledger rebuild is running (it owns the scratch schema)")
        journals, undecodable = await replay(settings, merchant, progress)
        await create_scratch(conn)
        await post_scratch(settings, list(journals.values()), progress)
        diff = Diff(0, 0, undecodable=undecodable, faust_table=changelog_topic(app_id))
        rebuilt_balances = await compare(conn, merchant, diff)
    progress(f"compared with the live ledger; reading {diff.faust_table}")
    table = await faust_balances(settings, app_id)
    diff.faust_accounts, diff.faust_differ = faust_differences(rebuilt_balances, table, merchant)
    diff.seconds = time.monotonic() - began
    return diff
