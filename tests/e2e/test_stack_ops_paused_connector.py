"""A connector paused on purpose (benchmarks do, an operator may): `status` shows it paused,
not DOWN, and does not fail for it; `up` exits 0 and leaves it paused. Leaves it RUNNING."""

from __future__ import annotations

import os
import re

import pytest

from testkit import connector
from testkit.connector import STACK_CONNECTOR as CONNECTOR
from testkit.stack import run_stack
from testkit.waiting import wait_until

pytestmark = pytest.mark.disruptive

CONNECT_URL = os.environ.get("CONNECT_URL",
                             f"http://127.0.0.1:{os.environ.get('CONNECT_PORT', '8083')}")


def states() -> list[str]:
    found = connector.states(CONNECT_URL, CONNECTOR)
    assert found, f"{CONNECTOR} is not registered at {CONNECT_URL}"
    return found


def test_a_paused_connector_is_shown_paused_and_up_leaves_it_paused() -> None:
    assert set(states()) == {"RUNNING"}, "the stack's connector should stream before the test"
    assert connector.pause(CONNECT_URL, CONNECTOR)
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
        connector.resume(CONNECT_URL, CONNECTOR)
        wait_until(lambda: set(states()) == {"RUNNING"}, timeout=60, interval=0.5,
                   what="connector running again")
