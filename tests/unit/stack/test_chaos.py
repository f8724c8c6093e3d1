"""chaos counts a recovery only when the probe payment succeeded, fails a run whose load was
blocked by fraud, and restarts the watchdog with the worker's load setting (a worker the
watchdog starts again after a kill inherits the watchdog's environment)."""

from __future__ import annotations

import argparse
from typing import Any

from stack.chaos import __main__ as chaos_main
from stack.chaos.faults import FaultResult, probe_cell
from stack.chaos.invariants import blocked_by_fraud
from stack.chaos.load import probe_payment


class FakeClient:
    """The API as probe_payment sees it: one create, then the statuses it reads in turn."""

    def __init__(self, statuses: list[str], *, create_status: int = 201) -> None:
        self.statuses = statuses
        self.create_status = create_status

    async def post(self, path: str, body: dict[str, Any], key: str,
                   deadline: float) -> tuple[int, dict[str, Any]]:
        return self.create_status, {"id": "pay_probe"}

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return 200, {"status": status}


async def test_a_probe_reports_how_it_ended() -> None:
    seconds, status = await probe_payment(FakeClient(["pending", "succeeded"]), 5)  # type: ignore[arg-type]
    assert status == "succeeded" and seconds is not None
    # Blocked is terminal but no recovery: the worker lost the load's fraud setting.
    seconds, status = await probe_payment(FakeClient(["blocked"]), 5)  # type: ignore[arg-type]
    assert status == "blocked" and seconds is not None
    assert await probe_payment(FakeClient(["pending"]), 0.3) == (None, "pending")  # type: ignore[arg-type]
    assert await probe_payment(FakeClient([], create_status=503), 1) == (  # type: ignore[arg-type]
        None, "create 503")


def test_the_table_shows_a_probe_that_did_not_succeed() -> None:
    def result(seconds: float | None, status: str | None) -> FaultResult:
        return FaultResult("worker", 0, 3.5, 0, 0, 0.0, seconds, status)

    assert probe_cell(result(9.58, "succeeded")) == "9.6"
    assert probe_cell(result(9.58, "blocked")) == "9.6 blocked"
    assert probe_cell(result(None, "pending")) == "never (pending)"
    assert probe_cell(result(None, None)) == "never"


def test_payments_blocked_by_fraud_break_the_run() -> None:
    assert blocked_by_fraud([{"id": "pay_a", "status": "succeeded"},
                             {"id": "pay_b", "status": "failed"}]) == []
    [sentence] = blocked_by_fraud([{"id": "pay_c", "status": "blocked"},
                                   {"id": "pay_b", "status": "blocked"},
                                   {"id": "pay_a", "status": "succeeded"}])
    assert sentence.startswith("2 payments blocked by fraud (first pay_b)")


async def test_the_watchdog_is_restarted_with_the_worker(monkeypatch: Any) -> None:
    stopped: list[tuple[str, ...]] = []

    def fake_run_stack(*args: str, **kwargs: Any) -> Any:
        stopped.append(args)
        return None

    monkeypatch.setattr(chaos_main.stack, "env", dict)
    monkeypatch.setattr(chaos_main.stack, "run_stack", fake_run_stack)
    monkeypatch.setattr(chaos_main, "make_up", lambda: (1, 0.0, "no stack here"))
    args = argparse.Namespace(faults="worker", profile="short")
    assert await chaos_main.run(args) == 2  # stops there: make up failed
    [stop] = stopped
    assert stop == ("stop", "worker", "watchdog")


async def test_the_restarts_profile_takes_each_worker_down_each_way_in_turn(
        monkeypatch: Any) -> None:
    from stack.chaos import restarts

    taken: list[tuple[str, str]] = []
    monkeypatch.setattr(restarts, "_take_down_and_back",
                        lambda name, way: taken.append((way, name)))
    done = await restarts.cycle(["worker", "worker-2"], 7, 0.0)
    assert taken == [("restart", "worker"), ("restart", "worker-2"), ("kill", "worker"),
                     ("kill", "worker-2"), ("freeze", "worker"), ("freeze", "worker-2"),
                     ("restart", "worker")]
    assert done[2] == "kill worker"
