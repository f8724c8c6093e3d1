"""The stack's watchdog starts again a worker that exited (crashed, killed, or ended itself past
a deadline), never one stopped on purpose, and not while Kafka is down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stack import cdc_watchdog
from stack.watchdog import restart_if_exited


class FakeWorker:
    """A component as restart_if_exited sees it: its pid file, whether that process runs."""

    name = "worker"

    def __init__(self, recorded: int | None, *, alive: bool) -> None:
        self.recorded = recorded
        self.alive = alive
        self.launched: int | None = None
        self.cleared = 0
        # What happens to the pid file while the check waits to confirm (a stop in progress).
        self.on_confirm: Any = None

    def recorded_pid(self) -> int | None:
        return self.recorded

    def pid(self) -> int | None:
        return self.recorded if self.alive else None

    def clear_stale(self) -> None:
        self.cleared += 1
        self.recorded = None

    def launch(self) -> None:
        self.launched, self.recorded, self.alive = 4242, 4242, True


def check(worker: FakeWorker) -> Any:
    return restart_if_exited(worker, confirm_after=0)


def test_a_worker_whose_process_is_gone_is_started_again() -> None:
    worker = FakeWorker(1234, alive=False)
    assert check(worker)(True) == [
        "worker: pid 1234 had exited without a stop; started again (pid 4242)"]
    assert worker.cleared == 1 and worker.launched == 4242
    assert check(worker)(True) == []  # running now: nothing more to do


def test_a_worker_stopped_on_purpose_has_no_pid_file_and_stays_stopped() -> None:
    worker = FakeWorker(None, alive=False)
    assert check(worker)(True) == []
    assert worker.launched is None


def test_a_running_worker_is_left_alone() -> None:
    worker = FakeWorker(1234, alive=True)
    assert check(worker)(True) == [] and worker.launched is None


def test_no_restart_while_kafka_is_down_since_the_worker_would_only_exit_again() -> None:
    worker = FakeWorker(1234, alive=False)
    assert check(worker)(False) == [] and worker.launched is None
    assert check(worker)(True) != [] and worker.launched == 4242


def test_a_stop_in_progress_removes_its_pid_file_and_is_not_mistaken_for_an_exit() -> None:
    worker = FakeWorker(1234, alive=False)
    real_sleep = time.sleep

    def stop_finishes(seconds: float) -> None:
        worker.recorded = None  # `stop` unlinks the pid file once the process is gone

    time.sleep = stop_finishes
    try:
        assert restart_if_exited(worker, confirm_after=2.0)(True) == []
    finally:
        time.sleep = real_sleep
    assert worker.launched is None


def test_the_watchdog_runs_the_restart_check_each_round_and_logs_it(
        tmp_path: Path, capsys: Any) -> None:
    seen: list[bool] = []

    def restart(kafka_up: bool) -> list[str]:
        seen.append(kafka_up)
        return ["worker: pid 1 had exited without a stop; started again (pid 2)"]

    def broken(kafka_up: bool) -> list[str]:
        raise OSError("no /proc")

    cdc_watchdog.run([], kafka_up=lambda: True, state_file=tmp_path / "watchdog.json",
                     rounds=1, also=[restart, broken])
    assert seen == [True]
    log = capsys.readouterr().out
    assert "worker: pid 1 had exited without a stop; started again (pid 2)" in log
    assert "check failed: OSError('no /proc')" in log
