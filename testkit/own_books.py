"""Books of a test's own: a Stripe and a database that are not the stack's.

A test that plants drift on purpose (PaymentIntents made behind our back, rows
moved by hand) would otherwise leave it in the stack's books for ever:
localstripe cannot delete an object, and the ledger is append-only. So it
plants it here instead: a localstripe of its own (stack.localstripe
on a free port, its store in a directory of its own, no webhook registered: its
events go nowhere) and a database of its own on the stack's primary, made from
db/migrations (testkit/own_database.py, whose name carries our pid: a killed
run's is dropped by the next). `paystream reconcile` runs against both through
its environment (DATABASE_URL, STRIPE_API_BASE). Both go at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from paystream.settings import Settings
from testkit.cdc_feed import with_dbname
from testkit.own_database import OwnDatabase
from testkit.ports import free_port
from testkit.stack import admin_url
from testkit.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
# Run in ROOT, the checkout that holds the stack package.
LAUNCHER = [sys.executable, "-m", "stack.localstripe"]


@dataclasses.dataclass
class OwnBooks:
    """settings and env point at the test's own Stripe and database; conn is open on it."""

    settings: Settings
    env: dict[str, str]
    conn: psycopg.AsyncConnection[Any]


@contextlib.asynccontextmanager
async def own_stripe(settings: Settings) -> AsyncIterator[str]:
    """A localstripe of the test's own; its base URL. Stopped and its store removed after."""
    with tempfile.TemporaryDirectory(prefix="own-stripe-") as folder:
        port = free_port()
        with open(Path(folder) / "launcher.log", "wb") as log:
            proc = subprocess.Popen(
                [*LAUNCHER, "--port", str(port),
                 "--store", str(Path(folder) / "store.pickle")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        try:
            async def ready() -> bool:
                assert proc.poll() is None, (Path(folder) / "launcher.log").read_text()
                try:
                    async with aiohttp.ClientSession() as http, http.get(
                            f"{base}/v1/customers",
                            headers={"Authorization": f"Bearer {settings.stripe_api_key}"},
                            timeout=aiohttp.ClientTimeout(total=3)) as resp:
                        return resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await eventually(ready, timeout=60, interval=0.2, what=f"own localstripe on {port}")
            yield base
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


@contextlib.asynccontextmanager
async def own_database(settings: Settings) -> AsyncIterator[Settings]:
    """settings on a database of the test's own (writes on the primary, reads through
    the stack's replicas, which copy every database); dropped after."""
    async with OwnDatabase(settings, admin_url(), history=0) as database:
        yield dataclasses.replace(
            database.settings,
            database_read_url=with_dbname(settings.database_read_url, database.name))


@contextlib.asynccontextmanager
async def own_books(settings: Settings) -> AsyncIterator[OwnBooks]:
    """`async with own_books(settings) as own:` a Stripe and a database of the test's own."""
    async with own_stripe(settings) as base, \
            OwnDatabase(settings, admin_url(), history=0) as database:
        own = dataclasses.replace(database.settings, stripe_api_base=base)
        env = {**os.environ, "DATABASE_URL": own.database_url, "STRIPE_API_BASE": base}
        async with await psycopg.AsyncConnection.connect(own.database_url,
                                                         autocommit=True) as conn:
            yield OwnBooks(own, env, conn)
