"""A change feed of one's own on the shared stack, for the stream e2e tests and benchmarks.

The e2e stream tests (tests/e2e/conftest.py) and the stream
benchmarks (bench/streams_bench.py, bench/stripe_bench.py) run `paystream
worker`s of their own against the stack `make up` runs. The stack's change
stream carries every merchant and all of its history; theirs must carry only
their own merchants, from the moment they start. A feed is made of what
production's CDC is made of, nothing the worker knows about:

- a publication with a row filter (PostgreSQL 15): the payments and refunds
  whose merchant_id starts with the feed's merchant prefix. Both tables are
  REPLICA IDENTITY FULL (db/migrations/002_cdc.sql), which a filter needs for
  updates and deletes. The application role creates it, as the migrations
  create the stack's: it owns the tables;
- a second Debezium connector: connectors/payments.json with a name,
  topic.prefix, slot.name and publication.name of its own (autocreate stays
  disabled) and snapshot.mode=no_data: no snapshot of existing rows, it streams
  from the moment its slot is made. Without the heartbeat: its action query
  writes the stack's cdc_heartbeat, whose beats stack/cdc.py takes for the stack
  connector's, and the feed lives for minutes only;
- the worker gets CDC_TOPIC_PREFIX=<the feed's topic prefix> (`env()`), so its
  payments and refunds topics are the feed's: a new group reads them from their
  beginning, which is the feed's start.

`close()` removes all of it: the connector (stopped, its offsets reset, deleted),
its replication slot (once its session is gone), the publication, the topics.
An abandoned slot keeps WAL on the primary for ever, so `start()` first sweeps
what killed sessions left: every feed object whose owner process is gone (its
pid is in the name). `.venv/bin/python -m testkit.cdc_feed sweep` does only that.

Names: connector and topic prefix `feed-<kind>-<pid>-<token>`, slot and
publication `feed_<kind>_<pid>_<token>`.

Unlike connectors/register.py, which it drives Connect with, it needs the
virtualenv (psycopg, aiokafka, paystream.settings).
Dropping a slot takes a role with REPLICATION or a superuser: DATABASE_ADMIN_URL
(else the one `make env` prints).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import secrets
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg
from aiokafka.admin import AIOKafkaAdminClient
from psycopg import sql

from connectors import register
from paystream.settings import Settings
from testkit.stack import admin_url
from testkit.topics import delete_topics

ROOT = Path(__file__).resolve().parents[1]
# The stack's connector, which a feed copies.
BASE_CONFIG = ROOT / "connectors" / "payments.json"
# What a feed leaves out of it (see the module docstring).
LEFT_OUT = ("heartbeat.interval.ms", "heartbeat.action.query")
NAME = re.compile(r"^feed[-_](?P<kind>[a-z0-9]+)[-_](?P<pid>[0-9]+)[-_](?P<token>[0-9a-f]+)$")
# How long a stopped connector's session may still hold its slot before it is ended.
SLOT_GRACE_S = 30.0


@dataclasses.dataclass(frozen=True)
class FeedName:
    """The names of one feed's objects: who made it (kind, pid) and a random token."""

    kind: str
    pid: int
    token: str

    @classmethod
    def new(cls, kind: str) -> FeedName:
        if not re.fullmatch(r"[a-z0-9]+", kind):
            raise ValueError(f"feed kind {kind!r}: lower-case letters and digits only")
        return cls(kind, os.getpid(), secrets.token_hex(3))

    @classmethod
    def parse(cls, text: str) -> FeedName | None:
        found = NAME.match(text)
        return None if found is None else cls(found["kind"], int(found["pid"]), found["token"])

    @property
    def connector(self) -> str:
        return f"feed-{self.kind}-{self.pid}-{self.token}"

    @property
    def topic_prefix(self) -> str:
        return self.connector

    @property
    def slot(self) -> str:
        return f"feed_{self.kind}_{self.pid}_{self.token}"

    @property
    def publication(self) -> str:
        return self.slot

    def owner_alive(self) -> bool:
        """Whether the process that made the feed still runs (on this machine)."""
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """Whether process pid runs on this machine (ours, or someone else's)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def connector_config(name: FeedName, base: dict[str, str] | None = None, *,
                     dbname: str | None = None) -> dict[str, str]:
    """The stack connector's config (connectors/payments.json), pointed at the feed (and
    at database dbname instead of the stack's, for a benchmark with a database of its
    own)."""
    config = dict(base if base is not None else json.loads(BASE_CONFIG.read_text()))
    for key in LEFT_OUT:
        config.pop(key, None)
    if dbname is not None:
        config["database.dbname"] = dbname
    config.update({
        "topic.prefix": name.topic_prefix,
        "slot.name": name.slot,
        "publication.name": name.publication,
        "publication.autocreate.mode": "disabled",
        # Stream from the slot's creation on; no read events for what exists already.
        "snapshot.mode": "no_data",
    })
    return config


def publication_sql(name: FeedName, merchant_id_prefix: str) -> sql.Composed:
    # starts_with rather than LIKE: "_" in a merchant id would be a wildcard.
    where = sql.SQL("WHERE (starts_with(merchant_id, {}))").format(sql.Literal(merchant_id_prefix))
    return sql.SQL("CREATE PUBLICATION {} FOR TABLE public.payments {w}, public.refunds {w}"
                   ).format(sql.Identifier(name.publication), w=where)


def with_dbname(url: str, dbname: str) -> str:
    """url for database dbname: a postgresql:// URL stays one (what the settings and
    `make env` use), a key=value string gets a dbname."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        return parts._replace(path="/" + dbname).geturl()
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def connect_url() -> str:
    return os.environ.get("CONNECT_URL", "http://127.0.0.1:8083").rstrip("/")


class Feed:
    """One feed: `await start()`, point workers at it with `env()`, `await close()`."""

    def __init__(self, kind: str, merchant_id_prefix: str, settings: Settings, *,
                 admin: str | None = None, connect: str | None = None,
                 dbname: str | None = None) -> None:
        """dbname: the database the feed decodes, when not the stack's (settings'
        database_url must then point at it too: the publication is made there)."""
        if not re.fullmatch(r"[A-Za-z0-9_]+", merchant_id_prefix):
            raise ValueError(f"merchant prefix {merchant_id_prefix!r}: letters, digits and _")
        self.name = FeedName.new(kind)
        self.merchant_id_prefix = merchant_id_prefix
        self.base = settings
        self.dbname = dbname
        # A logical slot is dropped from its own database.
        self.admin_url = admin or admin_url()
        if dbname is not None:
            self.admin_url = with_dbname(self.admin_url, dbname)
        self.connect_url = (connect or connect_url()).rstrip("/")
        self.started = False

    @property
    def settings(self) -> Settings:
        """The settings of a worker reading the feed (its payments and refunds topics)."""
        return dataclasses.replace(self.base, cdc_topic_prefix=self.name.topic_prefix)

    def env(self) -> dict[str, str]:
        """What a worker's environment needs to read the feed."""
        return {"CDC_TOPIC_PREFIX": self.name.topic_prefix}

    async def start(self, *, timeout: float = 120.0) -> None:
        """Sweep leftovers, make the publication and the connector, and wait until the
        slot exists and is read: every change committed from then on is in the feed."""
        await sweep(self.base, admin=self.admin_url, connect=self.connect_url)
        self.started = True  # from here on, close() has something to remove
        async with await psycopg.AsyncConnection.connect(self.base.database_url,
                                                         autocommit=True) as conn:
            await conn.execute(publication_sql(self.name, self.merchant_id_prefix))
        await asyncio.to_thread(register.register_config, self.connect_url,
                                self.name.connector,
                                connector_config(self.name, dbname=self.dbname),
                                timeout=timeout)
        deadline = time.monotonic() + timeout
        async with await psycopg.AsyncConnection.connect(self.admin_url,
                                                         autocommit=True) as admin:
            while True:
                cur = await admin.execute("SELECT active FROM pg_replication_slots "
                                          "WHERE slot_name = %s", (self.name.slot,))
                row = await cur.fetchone()
                if row is not None and row[0]:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"slot {self.name.slot} not streaming after "
                                       f"{timeout:.0f}s (connector {self.name.connector})")
                await asyncio.sleep(0.2)

    async def close(self, *, timeout: float = 120.0) -> None:
        """Remove the connector, the slot, the publication and the topics (workers first)."""
        if not self.started:
            return
        await remove(self.name, self.base, admin=self.admin_url, connect=self.connect_url,
                     timeout=timeout)
        self.started = False


async def remove(name: FeedName, settings: Settings, *, admin: str, connect: str,
                 timeout: float = 120.0) -> None:
    """Everything of one feed, each part whether or not it exists."""
    deadline = time.monotonic() + timeout
    await asyncio.to_thread(register.unregister, connect, name.connector, timeout=timeout)
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await _drop_slot(conn, name.slot, deadline)
        await conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
            sql.Identifier(name.publication)))
    await delete_topics(settings.kafka_bootstrap, name.topic_prefix + ".")


async def _drop_slot(conn: psycopg.AsyncConnection[Any], slot: str, deadline: float) -> None:
    """Drop the slot once no session holds it; the stopped connector's session goes by
    itself, one still there after SLOT_GRACE_S is ended (it can only be the feed's).
    A logical slot can only be dropped from its own database: one made in another
    (a benchmark's own) is dropped through a connection to that one."""
    grace_until = time.monotonic() + SLOT_GRACE_S
    while True:
        cur = await conn.execute("SELECT active_pid, database, database = current_database() "
                                 "FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = await cur.fetchone()
        if row is None:
            return
        if row[0] is None:
            try:
                if row[2] is False:
                    async with await psycopg.AsyncConnection.connect(
                            with_dbname(conn.info.dsn, row[1]),
                            password=conn.info.password, autocommit=True) as own:
                        await own.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                else:
                    await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            except psycopg.errors.UndefinedObject:
                return  # dropped meanwhile
            except psycopg.errors.ObjectInUse:
                pass  # taken again meanwhile: look again
        elif time.monotonic() > grace_until:
            await conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                               "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
        if time.monotonic() > deadline:
            raise RuntimeError(f"replication slot {slot} still active (pid {row[0]})")
        await asyncio.sleep(0.2)


async def sweep(settings: Settings, *, admin: str, connect: str) -> list[str]:
    """Remove every feed whose owner process is gone: connectors, slots, publications
    and topics left by killed sessions. What was removed, by name."""
    found: dict[FeedName, None] = {}

    def note(text: str) -> None:
        name = FeedName.parse(text)
        if name is not None and not name.owner_alive():
            found[name] = None

    for connector in await asyncio.to_thread(register.connector_names, connect):
        note(connector)
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        cur = await conn.execute("SELECT slot_name FROM pg_replication_slots "
                                 "UNION SELECT pubname FROM pg_publication")
        for (text,) in await cur.fetchall():
            note(text)
    client = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await client.start()
    try:
        for topic in await client.list_topics():
            note(topic.split(".", 1)[0])
    finally:
        await client.close()
    for name in found:
        await remove(name, settings, admin=admin, connect=connect)
    return [name.connector for name in found]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["sweep"]:
        print(__doc__.split("\n\n")[0] + "\n\nusage: python -m testkit.cdc_feed sweep   "
              "(remove the feeds of processes that are gone)", file=sys.stderr)
        return 2
    removed = asyncio.run(sweep(Settings.from_env(), admin=admin_url(), connect=connect_url()))
    for connector in removed:
        print(f"removed feed {connector}")
    print(f"{len(removed)} abandoned feed(s) removed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
