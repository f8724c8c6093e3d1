"""`paystream operator create|list|revoke`: hashed keys that open the console until revoked."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from aiohttp.test_utils import TestClient

PAYSTREAM = Path(sys.executable).parent / "paystream"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PAYSTREAM), *args], capture_output=True, text=True, timeout=60)


def create(name: str) -> dict[str, str]:
    result = run("operator", "create", "--name", name)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


async def test_create_prints_the_key_once_and_stores_its_hash(
    client: TestClient, db: psycopg.AsyncConnection
) -> None:
    name = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    created = create(name)
    assert set(created) == {"id", "name", "operator_key"} and created["name"] == name
    cur = await db.execute("SELECT name, key_hash, revoked_at FROM operators WHERE id = %s",
                           (created["id"],))
    assert await cur.fetchone() == (
        name, hashlib.sha256(created["operator_key"].encode()).hexdigest(), None)
    resp = await client.get(
        "/console/", headers={"Authorization": f"Bearer {created['operator_key']}"})
    assert resp.status == 200
    listed = run("operator", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = [json.loads(line) for line in listed.stdout.splitlines()
            if json.loads(line)["id"] == created["id"]]
    assert [(o["name"], o["revoked_at"]) for o in mine] == [(name, None)]
    # The key is printed by create and nowhere else.
    assert created["operator_key"] not in listed.stdout
    assert created["operator_key"] not in run("operator", "list").stdout
    assert run("operator", "revoke", created["id"]).returncode == 0


async def test_revoke_by_name_or_id_shuts_the_console(client: TestClient) -> None:
    for by in ("name", "id"):
        created = create(f"ops-{uuid.uuid4().hex[:8]}")
        auth = {"Authorization": f"Bearer {created['operator_key']}"}
        login = await client.post("/console/login", data={"key": created["operator_key"]},
                                      allow_redirects=False)
        client.session.cookie_jar.clear()
        cookie = {"Cookie": f"paystream_console={login.cookies['paystream_console'].value}"}
        assert (await client.get("/console/", headers=cookie)).status == 200

        revoked = run("operator", "revoke", created[by])
        assert revoked.returncode == 0, revoked.stderr
        assert created["id"] in revoked.stdout
        assert (await client.get("/console/", headers=auth)).status == 401
        assert (await client.get("/console/", headers=cookie)).status == 401
        again = run("operator", "revoke", created[by])
        assert again.returncode == 1 and "no active operator" in again.stderr


def test_a_name_is_reusable_once_revoked_and_never_looks_like_an_id() -> None:
    name = f"ops-{uuid.uuid4().hex[:8]}"
    first = create(name)
    taken = run("operator", "create", "--name", name)
    assert taken.returncode == 1 and "operator" in taken.stderr
    assert run("operator", "revoke", first["id"]).returncode == 0
    second = create(name)
    assert second["id"] != first["id"]
    assert run("operator", "revoke", name).returncode == 0
    refused = run("operator", "create", "--name", "op_lookalike")
    assert refused.returncode == 2 and refused.stdout == ""


def test_help_lists_the_operator_commands() -> None:
    result = run("operator", "--help")
    assert result.returncode == 0
    assert all(action in result.stdout for action in ("create", "list", "revoke"))
