"""`paystream merchant create` stores a hashed key; the printed key authenticates."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.integration.api.api_helpers import Api

PAYSTREAM = Path(sys.executable).parent / "paystream"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PAYSTREAM), *args], capture_output=True, text=True, timeout=60)


async def test_merchant_create_prints_credentials_and_stores_the_hash(
    api: Api, db: psycopg.AsyncConnection
) -> None:
    result = run("merchant", "create", "CLI Shop", "--webhook-url", "http://127.0.0.1:9/hook")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"id", "api_key", "webhook_secret"}
    cur = await db.execute(
        "SELECT name, api_key_hash, webhook_url, webhook_secret FROM merchants WHERE id = %s",
        (created["id"],))
    row = await cur.fetchone()
    assert row == ("CLI Shop", hashlib.sha256(created["api_key"].encode()).hexdigest(),
                   "http://127.0.0.1:9/hook", created["webhook_secret"])
    resp = await api.client.get("/v1/balances",
                                headers={"Authorization": f"Bearer {created['api_key']}"})
    assert resp.status == 200


def test_merchant_create_refuses_a_bad_url() -> None:
    result = run("merchant", "create", "Shop", "--webhook-url", "not a url")
    assert result.returncode == 2
    assert "webhook URL" in result.stderr
    assert result.stdout == ""


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "api" in result.stdout and "merchant" in result.stdout
    assert run("api", "--help").returncode == 0
