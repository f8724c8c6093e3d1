"""Helpers for tests that look at or steer the local stack through stack/stackctl.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[3]

# connectors/register.py is a stdlib script, not a package module: load it by path.
_spec = importlib.util.spec_from_file_location("connectors_register",
                                               ROOT / "connectors" / "register.py")
assert _spec and _spec.loader
connectors_register = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(connectors_register)


def stackctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "stack" / "stackctl.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def make(target: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", target], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def pids() -> dict[str, int | None]:
    out = stackctl("json")
    assert out.returncode == 0, out.stderr
    return {name: state["pid"] for name, state in json.loads(out.stdout).items()}


async def insert_payment(database_url: str, *, amount: int = 1234) -> str:
    """Inserts a merchant and a payment straight into the primary; returns its id.

    The payment is born `blocked` (terminal) so the stream workers, if running,
    leave it alone: these tests look at the plumbing, not at payment processing.
    """
    suffix = uuid.uuid4().hex[:12]
    merchant, payment = f"mer_stack_{suffix}", f"pay_stack_{suffix}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO merchants (id, name, api_key_hash, webhook_secret) "
            "VALUES (%s, 'stack test', %s, 'whsec_test')", (merchant, f"hash_{suffix}"))
        await conn.execute(
            "INSERT INTO payments (id, merchant_id, amount, currency, customer, payment_method,"
            " status) VALUES (%s, %s, %s, 'usd', 'cus_stack', 'pm_card_visa', 'blocked')",
            (payment, merchant, amount))
    return payment
