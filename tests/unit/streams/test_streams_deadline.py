"""Deadlines on the calls Faust and aiokafka can wait on for ever: what is overdue, named;
the consumer's commits under them; past one, the process exits 70 at once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from paystream.settings import Settings, SettingsError
from streams import deadline
from streams.deadline import DeadlineConsumer, Deadlines, Overdue
from streams.faust_app import create_app

ROOT = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def deadlines() -> tuple[Deadlines, Clock, list[Overdue]]:
    clock, expired = Clock(), []
    return Deadlines(clock=clock, expire=expired.append), clock, expired


def test_a_call_within_its_deadline_is_not_overdue_and_one_past_it_is_named() -> None:
    d, clock, expired = deadlines()
    with d.watch("the consumer commit", 60):
        clock.now += 60
        assert d.check() is None
        clock.now += 0.5
        overdue = d.check()
    assert overdue is not None and expired == [overdue]
    assert (overdue.what, overdue.waited, overdue.limit) == ("the consumer commit", 60.5, 60)
    assert "waited 60.5s (deadline 60s) on the consumer commit" in overdue.describe()


def test_a_finished_call_leaves_no_deadline_behind_even_when_it_raised() -> None:
    d, clock, _ = deadlines()
    with pytest.raises(ConnectionError), d.watch("a commit", 1):
        raise ConnectionError("broker gone")
    clock.now += 3600
    assert d.check() is None and d.open_calls() == []


def test_the_overdue_call_comes_with_every_call_still_open_oldest_first() -> None:
    d, clock, _ = deadlines()
    with d.watch("the consumer commit", 60):
        clock.now += 5
        with d.watch("the offset commit in the consumer thread", 60):
            clock.now += 56
            overdue = d.check()
    assert overdue is not None and overdue.what == "the consumer commit"
    assert [what for what, _ in overdue.open] == [
        "the consumer commit", "the offset commit in the consumer thread"]
    assert "also open: the offset commit in the consumer thread (56.0s)" in overdue.describe()


def test_a_deadline_opened_by_a_condition_counts_from_when_it_first_held() -> None:
    d, clock, _ = deadlines()
    stopping = False
    d.start_when(lambda: stopping, "the worker's stop", 25)
    clock.now += 3600
    assert d.check() is None  # running for an hour is not a stop
    stopping = True
    assert d.check() is None
    clock.now += 25.5
    overdue = d.check()
    assert overdue is not None and overdue.what == "the worker's stop"
    assert overdue.waited == 25.5


def test_a_condition_that_raises_is_read_again_next_round() -> None:
    d, clock, _ = deadlines()
    answers = iter([RuntimeError("not started"), True])

    def stopping() -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    d.start_when(stopping, "the worker's stop", 1)
    assert d.check() is None
    assert d.check() is None  # holds now: the deadline starts here
    clock.now += 2
    assert d.check() is not None


class StuckThread:
    """The consumer thread with a commit that never returns (the coordinator is unknown)."""

    def __init__(self) -> None:
        self.calls: list[dict[Any, int]] = []
        self.release = asyncio.Event()

    async def commit(self, offsets: dict[Any, int]) -> bool:
        self.calls.append(dict(offsets))
        await self.release.wait()
        return True


def close_thread_loop(consumer: Any) -> None:
    """The consumer thread (never started here) made an event loop of its own: close it."""
    consumer._thread.thread_loop.close()


def app_with_deadlines(tmp_path: Path) -> tuple[Any, Deadlines, Clock, list[Overdue]]:
    settings = dataclasses.replace(Settings(), faust_store="memory://",
                                   faust_data_dir=str(tmp_path),
                                   faust_app_id="deadline-unit")
    app = create_app(settings)
    d, clock, expired = deadlines()
    deadline.install(app, commit_seconds=60, stop_seconds=25, deadlines=d, start=False)
    return app, d, clock, expired


async def test_the_app_consumer_commits_under_the_deadline(tmp_path: Path) -> None:
    app, d, clock, expired = app_with_deadlines(tmp_path)
    consumer = app.consumer
    assert isinstance(consumer, DeadlineConsumer)
    close_thread_loop(consumer)
    stuck = StuckThread()
    consumer._thread = stuck
    commit = asyncio.ensure_future(consumer._commit({("payments", 0): 42}))
    while not stuck.calls:
        await asyncio.sleep(0)
    clock.now += 61
    overdue = d.check()
    assert overdue is not None and expired == [overdue]
    assert "offset commit of 1 partition(s) in the aiokafka consumer thread" in overdue.what
    stuck.release.set()
    assert await commit is True
    assert d.open_calls() == []


async def test_a_commit_with_nothing_to_commit_closes_its_deadline(tmp_path: Path) -> None:
    app, d, clock, _ = app_with_deadlines(tmp_path)
    close_thread_loop(app.consumer)
    assert await app.consumer.force_commit() is False
    clock.now += 3600
    assert d.check() is None


async def test_the_app_stopping_opens_the_stop_deadline(tmp_path: Path) -> None:
    app, d, clock, _ = app_with_deadlines(tmp_path)
    assert d.check() is None
    app._stopped.set()  # what Service.stop() does first
    assert d.check() is None
    clock.now += 26
    overdue = d.check()
    assert overdue is not None and overdue.what.startswith("the worker's stop")


async def test_install_refuses_an_app_whose_consumer_exists(tmp_path: Path) -> None:
    settings = dataclasses.replace(Settings(), faust_store="memory://",
                                   faust_data_dir=str(tmp_path), faust_app_id="deadline-late")
    app = create_app(settings)
    close_thread_loop(app.consumer)  # made now: too late to change its class
    with pytest.raises(RuntimeError, match="before the app's consumer exists"):
        deadline.install(app, commit_seconds=60, stop_seconds=25, start=False)


def test_deadline_settings_are_read_and_refused_by_name() -> None:
    settings = Settings.from_env({"WORKER_COMMIT_DEADLINE_SECONDS": "30",
                                  "WORKER_STOP_DEADLINE_SECONDS": "15"})
    assert (settings.worker_commit_deadline_seconds,
            settings.worker_stop_deadline_seconds) == (30, 15)
    with pytest.raises(SettingsError, match="WORKER_COMMIT_DEADLINE_SECONDS=0 must be above"):
        Settings.from_env({"WORKER_COMMIT_DEADLINE_SECONDS": "0"})
    with pytest.raises(SettingsError, match="WORKER_STOP_DEADLINE_SECONDS must be above "
                                            "STRIPE_TIMEOUT_SECONDS"):
        Settings.from_env({"WORKER_STOP_DEADLINE_SECONDS": "10"})


def test_the_faust_timeouts_keep_their_order() -> None:
    """session <= request < commit deadline < producer request timeout
    (see streams/faust_app.py)."""
    settings = Settings()
    conf = create_app(dataclasses.replace(settings, faust_store="memory://",
                                          faust_app_id="deadline-order")).conf
    assert conf.broker_session_timeout <= conf.broker_request_timeout
    assert conf.broker_rebalance_timeout <= conf.broker_request_timeout
    assert conf.broker_request_timeout < settings.worker_commit_deadline_seconds
    assert settings.worker_commit_deadline_seconds < conf.producer_request_timeout
