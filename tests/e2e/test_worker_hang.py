"""A worker cannot hang: with the broker frozen (SIGSTOP) while it commits, the commit never
finishes; the worker exits 70 within its deadline naming what it waited on, and once the
broker is back a restarted worker makes progress.

The worker is a `paystream worker` of its own (group, CDC topic prefix, dead-letter topic,
web port, data folder), fed tombstones on its CDC topic: each is acked with nothing to
do, so it commits every second and nothing reaches the database or Stripe. The stack's
Kafka is frozen for the deadline plus a few seconds, always thawed in a finally; the
test ends when Kafka answers again and the stack's components that were up before are
up again. And what restarts it: the stack's watchdog starts again a worker that exited
without `python3 -m stack stop`, and leaves alone one that was stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from paystream.settings import Settings
from testkit import stack
from testkit.ports import free_port
from testkit.stack import pids, run_stack
from testkit.topics import delete_topics
from testkit.waiting import eventually, wait_until
from testkit.workers import WorkerProcess, clean_env

pytestmark = pytest.mark.disruptive

ROOT = Path(__file__).resolve().parents[2]
# Short, so the test freezes the shared broker briefly; the default is 60 s.
COMMIT_DEADLINE_SECONDS = 15.0
# The deadline is checked every second and the commit handler runs every second.
EXIT_SLACK_SECONDS = 10.0
# Tombstones fed while the broker freezes, which the worker acks with nothing to do: it
# is taking in messages up to the freeze, so the next commit (every second) has offsets.
FEED_PER_SECOND = 2000


@dataclass
class Names:
    app_id: str
    prefix: str

    @property
    def payments_topic(self) -> str:
        return f"{self.prefix}.public.payments"


@pytest.fixture
def names() -> Names:
    token = secrets.token_hex(3)
    return Names(app_id=f"paystream-hang-{token}", prefix=f"hang{token}")


@pytest.fixture
async def worker(settings: Settings, names: Names,
                 tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    env = clean_env()
    env.update({
        "FAUST_APP_ID": names.app_id,
        "CDC_TOPIC_PREFIX": names.prefix,
        "DLQ_TOPIC": f"{names.prefix}.dlq",
        "FAUST_WEB_PORT": str(free_port()),
        "FAUST_DATA_DIR": str(tmp_path / "faust"),
        "WORKER_COMMIT_DEADLINE_SECONDS": str(COMMIT_DEADLINE_SECONDS),
        "WORKER_STOP_DEADLINE_SECONDS": "15",
        "PYTHONUNBUFFERED": "1",
    })
    hang = WorkerProcess("hang", env, tmp_path / "worker.log")
    try:
        yield hang
    finally:
        hang.stop()
        await delete_topics(settings.kafka_bootstrap, f"{names.app_id}-", f"{names.prefix}.")


async def _produce_tombstones(producer: AIOKafkaProducer, topic: str, count: int) -> None:
    for i in range(count):
        await producer.send(topic, key=b'{"id":"pay_hang%d"}' % i, value=None)


async def _feed(producer: AIOKafkaProducer, topic: str) -> None:
    """Tombstones at FEED_PER_SECOND until cancelled (blocked sends and all)."""
    while True:
        started = time.monotonic()
        await _produce_tombstones(producer, topic, FEED_PER_SECOND // 10)
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - started)))


async def _progress(bootstrap: str, names: Names) -> tuple[int, int]:
    """(committed, end) summed over the partitions of the worker's CDC payments topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(names.app_id)
        mine = {tp: meta.offset for tp, meta in committed.items()
                if tp.topic == names.payments_topic and meta.offset >= 0}
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        partitions = await producer.partitions_for(names.payments_topic)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(
            [TopicPartition(names.payments_topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return sum(mine.values()), sum(ends.values())


async def _kafka_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # not yet
        return False
    finally:
        await admin.close()


async def test_a_commit_that_never_finishes_ends_the_worker_and_a_restarted_one_goes_on(
        settings: Settings, names: Names, worker: WorkerProcess) -> None:
    bootstrap = settings.kafka_bootstrap
    kafka_pid = pids()["kafka"]
    assert kafka_pid, "the stack's Kafka is not running"
    up_before = stack.up() & {"kafka", "connect", "worker"}

    worker.start()
    await worker.wait_ready()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    feeding = asyncio.ensure_future(_feed(producer, names.payments_topic))
    try:
        async def consuming() -> bool:
            assert not feeding.done(), feeding
            committed, _ = await _progress(bootstrap, names)
            return committed > 0
        await eventually(consuming, timeout=60, interval=0.5, what="the worker committing")

        os.kill(kafka_pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            async def gone() -> bool:
                return worker.exited() is not None
            await eventually(gone, timeout=COMMIT_DEADLINE_SECONDS + 45, interval=0.2,
                             what="the worker exiting past its commit deadline")
            exited_after = time.monotonic() - frozen_at
        finally:
            os.kill(kafka_pid, signal.SIGCONT)
            thawed_at = time.monotonic()
            feeding.cancel()
            await eventually(lambda: _kafka_answers(bootstrap), timeout=90, interval=1,
                             what="Kafka answering again")
    finally:
        feeding.cancel()
        await producer.stop()  # sends what the freeze held back
    print(f"\nworker exited {worker.exited()} {exited_after:.1f}s after the broker froze "
          f"(deadline {COMMIT_DEADLINE_SECONDS:g}s); Kafka answered "
          f"{time.monotonic() - thawed_at:.1f}s after SIGCONT")

    log = worker.log()
    assert worker.exited() == 70, worker.tail()
    assert "deadline passed: waited" in log, worker.tail()
    assert "the consumer commit" in log or "the offset commit" in log, worker.tail()
    assert exited_after < COMMIT_DEADLINE_SECONDS + EXIT_SLACK_SECONDS, worker.tail()

    # What a restarter does: the same worker again, which resumes from the last commit.
    restarted_at = time.monotonic()
    worker.start()
    await worker.wait_ready()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await _produce_tombstones(producer, names.payments_topic, 50)
    finally:
        await producer.stop()

    async def caught_up() -> bool:
        committed, end = await _progress(bootstrap, names)
        return committed == end
    await eventually(caught_up, timeout=120, interval=0.5,
                     what="the restarted worker committing everything")
    print(f"restarted worker ready and caught up on {(await _progress(bootstrap, names))[1]} "
          f"messages {time.monotonic() - restarted_at:.1f}s after its start")

    async def stack_back() -> bool:
        return up_before <= stack.up()
    await eventually(stack_back, timeout=120, interval=2,
                     what=f"the stack's {', '.join(sorted(up_before))} up again")


def _watchdog_rounds() -> float:
    """When the stack's watchdog last finished a round (its state file), 0 if never."""
    state = Path(os.environ.get("PAYSTREAM_STACK_DIR", ROOT / ".stack")) / "run" / "watchdog.json"
    try:
        return float(json.loads(state.read_text())["at"])
    except (OSError, ValueError, KeyError):
        return 0.0


def test_the_stack_watchdog_starts_again_a_worker_that_exited_not_one_stopped() -> None:
    assert pids()["watchdog"], "the stack's watchdog is not running"
    before = pids()["worker"]
    assert before, "the stack's worker is not running"
    try:
        # Stopped on purpose (as benches do): still stopped two watchdog rounds later.
        assert run_stack("stop", "worker").returncode == 0
        stopped_at = _watchdog_rounds()
        seen: list[float] = []

        def two_rounds() -> bool:
            at = _watchdog_rounds()
            if at > stopped_at and at not in seen:
                seen.append(at)
            return len(seen) >= 2
        wait_until(two_rounds, timeout=60, interval=0.5, what="two watchdog rounds")
        assert pids()["worker"] is None, "the watchdog started a worker stopped on purpose"
        assert run_stack("start", "worker").returncode == 0
        running = pids()["worker"]
        assert running

        # Gone without a stop (what exit 70 past a deadline looks like to it): started again.
        killed_at = time.monotonic()
        os.kill(running, signal.SIGKILL)

        def restarted() -> int | None:
            pid = pids()["worker"]
            return pid if pid and pid != running else None
        wait_until(restarted, timeout=60, interval=0.5, what="the watchdog restarting it")
        wait_until(lambda: "worker" in stack.up(), timeout=120, interval=1,
                   what="the restarted worker healthy")
        print(f"\nstack worker healthy again {time.monotonic() - killed_at:.1f}s after kill -9")
    finally:
        if pids()["worker"] is None:
            run_stack("start", "worker")
