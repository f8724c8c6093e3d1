"""The worker's watchdog: out of its group, or stalled with messages waiting, is unhealthy."""

from __future__ import annotations

from typing import NamedTuple

from streams.watchdog import STALL_SECONDS, UNASSIGNED_GRACE_SECONDS, Progress


class TP(NamedTuple):
    topic: str
    partition: int


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


A, B = TP("paystream.public.payments", 0), TP("paystream-fraud-verdicts", 1)


def progress() -> tuple[Progress, Clock]:
    clock = Clock()
    return Progress(clock=clock, started=clock.now), clock


def test_a_partition_whose_offset_moves_is_healthy_however_large_its_lag() -> None:
    watch, clock = progress()
    for step in range(10):
        clock.now += STALL_SECONDS
        health = watch.check([A], {A: 100 + step}, {A: 10_000})
        assert health.ok and health.unhealthy_for == 0


def test_an_idle_partition_with_nothing_waiting_is_not_stalled() -> None:
    watch, clock = progress()
    for _ in range(5):
        clock.now += STALL_SECONDS
        assert watch.check([A, B], {A: 50, B: None}, {A: 50, B: 0}).ok


def test_messages_waiting_behind_an_offset_that_does_not_move_is_a_stall() -> None:
    watch, clock = progress()
    assert watch.check([A, B], {A: 5, B: 7}, {A: 9, B: 7}).ok
    clock.now += STALL_SECONDS - 1
    assert watch.check([A, B], {A: 5, B: 7}, {A: 9, B: 7}).ok
    clock.now += 2
    health = watch.check([A, B], {A: 5, B: 7}, {A: 9, B: 7})
    assert not health.ok and health.stalled == ["paystream.public.payments:0"]
    clock.now += 30
    assert watch.check([A, B], {A: 5, B: 7}, {A: 9, B: 7}).unhealthy_for == 30
    # It moves again: healthy, and the count starts over.
    health = watch.check([A, B], {A: 6, B: 7}, {A: 9, B: 7})
    assert health.ok and health.unhealthy_for == 0


def test_unassigned_past_the_grace_means_out_of_the_group() -> None:
    watch, clock = progress()
    assert watch.check([], {}, {}).ok  # starting: joining takes a while
    clock.now += UNASSIGNED_GRACE_SECONDS + 1
    health = watch.check([], {}, {})
    assert not health.assigned and not health.ok
    assert watch.check([A], {A: 1}, {A: 1}).ok  # rejoined


def test_lag_is_reported_where_the_committed_offset_is_known() -> None:
    watch, _ = progress()
    health = watch.check([A, B], {A: 5, B: None}, {A: 9, B: 4})
    assert health.lag == {("paystream.public.payments", 0): 4}


def test_a_partition_without_a_committed_offset_yet_is_not_stalled() -> None:
    watch, clock = progress()
    for _ in range(3):
        clock.now += STALL_SECONDS
        assert watch.check([A], {A: None}, {A: 500}).ok
