"""A connector paused on purpose (benchmarks do, an operator may): `status` shows it paused,
not DOWN, and does not fail for it; `up` exits 0 and leaves it paused. Leaves it RUNNING."""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "stack"))
from conftest import wait_until  # noqa: E402
from stackutil import run_stack  # noqa: E402

pytestmark = pytest.mark.disruptive

CONNECTOR = "paystream-payments"
CONNECT_URL = os.environ.get("CONNECT_URL",
                             f"http://127.0.0.1:{os.environ.get('CONNECT_PORT', '8083')}")


def rest(method: str, path: str) -> object:
    req = urllib.request.Request(f"{CONNECT_URL}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def states() -> list[str]:
    status = rest("GET", f"/connectors/{CONNECTOR}/status")
    assert isinstance(status, dict)
    return [status["connector"]["state"], *(t["state"] for t in status["tasks"])]


def test_a_paused_connector_is_shown_paused_and_up_leaves_it_paused() -> None:
    assert set(states()) == {"RUNNING"}, "the stack's connector should stream before the test"
    rest("PUT", f"/connectors/{CONNECTOR}/pause")
    try:
        wait_until(lambda: set(states()) == {"PAUSED"}, timeout=30, interval=0.5,
                   what="connector paused")
        status = run_stack("status", timeout=120)
        line = next(x for x in status.stdout.splitlines() if re.match(r"\s+connect\s", x))
        assert re.match(r"\s+connect\s+paused\s", line), status.stdout
        assert f"/connectors/{CONNECTOR}/resume" in line
        others_down = [x for x in status.stdout.splitlines() if re.match(r"\s+\S+\s+DOWN\s", x)]
        assert status.returncode == (1 if others_down else 0), status.stdout

        up = run_stack("up", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "paused on purpose" in up.stdout
        assert set(states()) == {"PAUSED"}, "make up resumed a connector paused on purpose"
    finally:
        rest("PUT", f"/connectors/{CONNECTOR}/resume")
        wait_until(lambda: set(states()) == {"RUNNING"}, timeout=60, interval=0.5,
                   what="connector running again")
