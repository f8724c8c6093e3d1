"""Acks from before a rebalance do not move the next commit (streams/current_acks.py),
on Faust's own consumer and its commit arithmetic."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from faust.types import TP
from faust.types.tuples import ConsumerMessage

from paystream.settings import Settings
from streams import current_acks, deadline, metrics
from streams.current_acks import CurrentGenerationConsumer
from streams.faust_app import create_app
from tests.unit.streams.test_streams_deadline import close_thread_loop

TOPIC = "paystream.public.payments"
PARTITION = TP(TOPIC, 0)


def app_in_generation(tmp_path: Path, generation: int) -> Any:
    settings = dataclasses.replace(Settings(), faust_store="memory://",
                                   faust_data_dir=str(tmp_path), faust_app_id="acks-unit")
    app = create_app(settings)
    app.topics.acking_topics.add(TOPIC)  # what subscribing an agent to it does
    app.consumer_generation_id = generation
    app.flow_control.resume()
    close_thread_loop(app.consumer)
    return app


def fetched(offset: int, generation: int, topic: str = TOPIC) -> ConsumerMessage:
    return ConsumerMessage(topic, 0, offset, 0.0, 0, None, b"k", b"v", None,
                           tp=TP(topic, 0), generation_id=generation)


def refused() -> float:
    return metrics.REGISTRY.get_sample_value("paystream_stale_acks_refused_total") or 0.0


async def test_the_worker_consumer_refuses_acks_from_an_earlier_generation(
        tmp_path: Path) -> None:
    app = app_in_generation(tmp_path, generation=1)
    consumer = app.consumer
    assert isinstance(consumer, CurrentGenerationConsumer)
    for offset in range(5):
        assert consumer.ack(fetched(offset, generation=1))
    assert consumer._new_offset(PARTITION) == 5

    # A rebalance: the partition comes back in generation 2, Faust forgot its acks
    # and refetches from the committed offset 5.
    consumer._acked.pop(PARTITION)
    consumer._acked_index.pop(PARTITION)
    app.consumer_generation_id = 2
    before = refused()
    # Fetched in generation 1 and skipped (or handled late) now: not acked.
    assert not consumer.ack(fetched(6, generation=1))
    assert refused() == before + 1
    # Generation 2 handles its refetched copy of offset 5: the commit covers 5 only,
    # not the stale 6 this generation has not handled yet.
    assert consumer.ack(fetched(5, generation=2))
    assert consumer._new_offset(PARTITION) == 6
    assert consumer.ack(fetched(6, generation=2))
    assert consumer._new_offset(PARTITION) == 7


async def test_acks_while_flow_is_suspended_are_refused(tmp_path: Path) -> None:
    app = app_in_generation(tmp_path, generation=3)
    app.flow_control.suspend()  # a revocation in progress
    assert not app.consumer.ack(fetched(0, generation=3))
    app.flow_control.resume()
    assert app.consumer.ack(fetched(0, generation=3))
    assert app.consumer._new_offset(PARTITION) == 1


async def test_acks_of_a_stopping_worker_are_refused(tmp_path: Path) -> None:
    """Faust stops its agents by cancelling them, and a cancelled take_events batch
    acks all its events, handled or not: what the stop commits must not include them."""
    app = app_in_generation(tmp_path, generation=1)
    assert app.consumer.ack(fetched(0, generation=1))
    app._stopped.set()  # what Service.stop() does first
    assert not app.consumer.ack(fetched(1, generation=1))
    assert app.consumer._new_offset(PARTITION) == 1


async def test_topics_without_acks_are_left_to_faust(tmp_path: Path) -> None:
    app = app_in_generation(tmp_path, generation=1)
    before = refused()
    # Faust does not track acks for such a topic (a table's changelog): it answers
    # False whatever the generation, and nothing is counted as refused.
    assert not app.consumer.ack(fetched(0, generation=0, topic="other-changelog"))
    assert refused() == before


async def test_a_commit_waits_for_the_event_at_the_committed_offset(tmp_path: Path) -> None:
    """Faust would commit 8 here, past offset 5 that nothing acked."""
    app = app_in_generation(tmp_path, generation=1)
    consumer = app.consumer
    consumer._committed_offset[PARTITION] = 5  # what a commit (or a seek) leaves
    assert consumer.ack(fetched(6, generation=1))
    assert consumer.ack(fetched(7, generation=1))
    assert consumer._new_offset(PARTITION) is None
    assert consumer.ack(fetched(5, generation=1))
    assert consumer._new_offset(PARTITION) == 8


async def test_a_commit_goes_past_offsets_the_log_no_longer_holds(tmp_path: Path) -> None:
    """Committed 5, the log now starts at 9: Faust records the gap from 6 (one past the
    committed offset, its own convention) and the commit moves on as before."""
    app = app_in_generation(tmp_path, generation=1)
    consumer = app.consumer
    consumer._committed_offset[PARTITION] = 5
    await consumer._add_gap(PARTITION, 6, 9)  # what reading 9 after 5 records
    assert consumer.ack(fetched(9, generation=1))
    assert consumer._new_offset(PARTITION) == 10


def test_the_deadline_consumer_keeps_the_guard() -> None:
    assert issubclass(deadline.DeadlineConsumer, CurrentGenerationConsumer)


async def test_a_head_that_does_not_come_is_refetched(tmp_path: Path) -> None:
    """Held for REFETCH_AFTER_SECONDS, the partition is sought back to the committed
    offset (Faust marks the offset read from there), once per period."""
    app = app_in_generation(tmp_path, generation=1)
    consumer = app.consumer
    now = [100.0]
    consumer.clock = lambda: now[0]
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    consumer.seek = seek
    consumer._committed_offset[PARTITION] = 5
    assert consumer.ack(fetched(6, generation=1))
    patience = current_acks.REFETCH_AFTER_SECONDS
    assert consumer._new_offset(PARTITION) is None
    now[0] += patience - 1
    assert consumer._new_offset(PARTITION) is None
    await asyncio.sleep(0)
    assert sought == []
    now[0] += 1
    assert consumer._new_offset(PARTITION) is None
    await asyncio.sleep(0)
    assert sought == [(PARTITION, 5)]
    now[0] += 1
    assert consumer._new_offset(PARTITION) is None  # the next refetch a period later
    await asyncio.sleep(0)
    assert sought == [(PARTITION, 5)]
    assert consumer.ack(fetched(5, generation=1))  # refetched and handled
    assert consumer._new_offset(PARTITION) == 7
