"""The launcher's change log: append and replay, torn tails, checkpoints, deletes, commits."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # localstripe's server registers plain functions as handlers, which aiohttp deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import resources

from stack.localstripe.changelog import ChangeLog, encode
from stack.localstripe.checkpoint import StoreWriter
from stack.localstripe.group_commit import Changes
from stack.localstripe.patch import stored_key


class Thing:
    """Stored like a localstripe object: under "thing:<id>"."""

    object = "thing"

    def __init__(self, id: str, **attrs: Any) -> None:
        self.id = id
        self.__dict__.update(attrs)


def new_log(path: Path, store: dict[str, Any] | None = None) -> Any:
    return ChangeLog(path, {} if store is None else store, stored_key)


def replayed(path: Path, base: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """A new store: base (a checkpoint) with every whole commit of the log at path applied."""
    log = new_log(path, dict(base or {}))
    applied, _torn = log.replay()
    return log.store, applied


def put(log: Any, *things: Thing) -> None:
    for thing in things:
        log.store[f"thing:{thing.id}"] = thing
    log.stage(f"thing:{thing.id}" for thing in things)
    log.commit()


def state(store: dict[str, Any]) -> list[tuple[str, Any]]:
    """The store's keys in order and its objects' contents, a stored object held by
    another as ("stored", key) only if it is that very object, to compare."""
    keys = {id(value): key for key, value in store.items()}

    def canon(value: Any, top: bool = False) -> Any:
        if not top and id(value) in keys:
            return ("stored", keys[id(value)])
        if hasattr(value, "__dict__"):
            return (type(value).__name__, canon(vars(value)))
        if isinstance(value, dict):
            return sorted((str(k), canon(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return [canon(item) for item in value]
        return value

    return [(key, canon(value, top=True)) for key, value in store.items()]


def test_what_was_committed_is_replayed_in_order(tmp_path: Path) -> None:
    log = new_log(tmp_path / "s.pickle")
    put(log, Thing("a", n=1), Thing("b", n=2))
    log.store["thing:a"].n = 10
    log.stage(["thing:a"])
    log.commit()
    put(log, Thing("c", n=3))

    store, applied = replayed(tmp_path / "s.pickle")
    assert applied == 3
    assert list(store) == ["thing:a", "thing:b", "thing:c"]
    assert [thing.n for thing in store.values()] == [10, 2, 3]
    assert state(store) == state(log.store)


def test_a_torn_last_record_is_ignored_and_the_next_run_writes_a_new_segment(
        tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    put(log, Thing("a"))
    segment = log.segment(1)
    first = segment.stat().st_size  # where the first commit ends
    put(log, Thing("b", payload="x" * 1000))
    log.close()
    whole = segment.read_bytes()
    for end in (first + 1, first + 7, first + 500, len(whole) - 1):
        segment.write_bytes(whole[:end])
        store, applied = replayed(path)
        assert (list(store), applied) == (["thing:a"], 1), end

    # A bad checksum (a write cut short then overwritten by garbage) ends the segment too.
    segment.write_bytes(whole + encode(b"S", "thing:c", b"junk")[:-1] + b"!")
    store, applied = replayed(path)
    assert (list(store), applied) == (["thing:a", "thing:b"], 2)

    # The next run never appends after a torn tail: its commits go to a new segment.
    again = new_log(path, store)
    put(again, Thing("d"))
    assert [seq for seq, _ in again.segments()] == [1, 2]
    assert list(replayed(path)[0]) == ["thing:a", "thing:b", "thing:d"]


def test_records_without_their_commit_record_are_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    put(log, Thing("a"))
    log.close()
    # Half of a commit reached the file: its records, but not the commit record.
    with open(log.segment(1), "ab") as file:
        file.write(encode(b"D", "thing:a"))
    store, applied = replayed(path)
    assert (list(store), applied) == (["thing:a"], 1)


def test_deletes_and_clears_are_replayed(tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    put(log, Thing("a"), Thing("b"), Thing("c"))
    del log.store["thing:b"]
    log.stage(["thing:b"])  # no longer stored: logged as a delete
    log.commit()
    assert list(replayed(path)[0]) == ["thing:a", "thing:c"]

    log.store.clear()
    log.stage_clear()
    log.commit()
    put(log, Thing("d"))
    store, applied = replayed(path, base={"thing:old": Thing("old")})
    assert (list(store), applied) == (["thing:d"], 4)


def test_a_stored_object_held_by_another_stays_one_object(tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    card: Any = Thing("card", last4="4242")
    # The customer is logged before the card it holds (created in the same request).
    log.store["thing:cus"] = Thing("cus", sources=[card], me=None)
    log.store["thing:cus"].me = log.store["thing:cus"]
    log.store["thing:card"] = card
    log.stage(["thing:cus", "thing:card"])
    log.commit()
    card.last4 = "0000"
    log.stage(["thing:card"])
    log.commit()

    store, _ = replayed(path)
    assert store["thing:cus"].sources[0] is store["thing:card"]
    assert store["thing:cus"].me is store["thing:cus"]
    assert store["thing:card"].last4 == "0000"
    assert state(store) == state(log.store)


def test_a_record_updates_the_checkpoints_object_in_place(tmp_path: Path) -> None:
    card = Thing("card", last4="4242")
    saved = pickle.dumps({"thing:card": card, "thing:cus": Thing("cus", sources=[card])})
    log = new_log(tmp_path / "s.pickle", pickle.loads(saved))
    log.store["thing:card"].last4 = "0000"
    log.stage(["thing:card"])
    log.commit()

    store, _ = replayed(tmp_path / "s.pickle", base=pickle.loads(saved))
    assert store["thing:cus"].sources[0] is store["thing:card"]
    assert store["thing:card"].last4 == "0000"


def checkpoint(log: Any, path: Path, *, crash_before_drop: bool = False) -> None:
    """A checkpoint as the writer takes one: rotate, write the store, drop what it covers."""
    writer = StoreWriter(log.store, path, fork=False, log=log)
    if crash_before_drop:
        writer.log = None  # the segments stay, as after a kill -9 right after the rename
        log.rotate()
    writer.write()


def load(path: Path) -> dict[str, Any]:
    return dict(pickle.loads(path.read_bytes())) if path.exists() else {}


@pytest.mark.parametrize("crash_before_drop", [False, True])
def test_checkpoint_then_replay_gives_the_same_store(tmp_path: Path,
                                                     crash_before_drop: bool) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    put(log, Thing("a", n=1), Thing("b", n=2))
    checkpoint(log, path, crash_before_drop=crash_before_drop)
    assert [seq for seq, _ in log.segments()] == ([1] if crash_before_drop else [])

    log.store["thing:a"].n = 5
    del log.store["thing:b"]
    log.stage(["thing:a", "thing:b"])
    log.commit()
    put(log, Thing("c", n=3))
    assert [seq for seq, _ in log.segments()][-1] == 2  # a new segment after the checkpoint

    store, _ = replayed(path, base=load(path))
    assert state(store) == state(log.store)


def test_a_crash_during_a_checkpoint_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    put(log, Thing("a", n=1))
    checkpoint(log, path)
    put(log, Thing("b", n=2))
    log.store["thing:a"].n = 4
    log.stage(["thing:a"])
    log.commit()
    before = tmp_path / "before"  # what is on disk as the next checkpoint begins
    before.mkdir()
    for _, segment in log.segments():
        shutil.copy(segment, before / segment.name)
    old_checkpoint = path.read_bytes()
    checkpoint(log, path)
    put(log, Thing("c", n=3))
    expected = state(log.store)

    # Killed before the rename: the old checkpoint and every segment.
    for segment in before.iterdir():
        shutil.copy(segment, tmp_path / segment.name)
    assert state(replayed(path, base=pickle.loads(old_checkpoint))[0]) == expected
    # Killed after the rename, before the segments were deleted: replayed over the new one.
    assert state(replayed(path, base=load(path))[0]) == expected


def test_a_failed_write_is_retried_in_a_new_segment(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    put(log, Thing("a"))
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        put(log, Thing("b"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    put(log, Thing("c"))
    assert [seq for seq, _ in log.segments()] == [1, 2]
    store, _ = replayed(path)
    assert list(store) == ["thing:a", "thing:b", "thing:c"]


# --- the group commit, in an event loop ------------------------------------------------


def test_a_waiter_returns_only_once_its_changes_are_written(tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    changes = Changes(log)

    async def scenario() -> None:
        changes.start(asyncio.get_running_loop())
        for i in range(20):  # twenty requests in one turn: one write for all
            log.store[f"thing:{i}"] = Thing(str(i))
            changes.mark(f"thing:{i}")
        await asyncio.wait_for(changes.durable(), 10)
        assert list(replayed(path)[0]) == [f"thing:{i}" for i in range(20)]
        assert log.commits == 1

        log.store["thing:0"].n = 1  # changed in place by a request that read it
        changes.touch("thing:0")
        changes.request_done(wrote=True)
        await asyncio.wait_for(changes.durable(), 10)
        assert replayed(path)[0]["thing:0"].n == 1
        await changes.stop()

    asyncio.run(scenario())


def test_a_change_made_as_a_write_ends_waits_for_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    changes = Changes(log)
    end_of_write = changes._written
    waiting: list[asyncio.Future[None]] = []

    def change_then_end(*args: Any) -> None:
        # A request changes b in the turn the first write's end is handled, before it.
        if not waiting:
            log.store["thing:b"] = Thing("b")
            changes.mark("thing:b")
            assert changes._next is not None
            waiting.append(changes._next)
        end_of_write(*args)

    changes._written = change_then_end

    async def scenario() -> None:
        changes.start(asyncio.get_running_loop())
        log.store["thing:a"] = Thing("a")
        changes.mark("thing:a")
        await asyncio.wait_for(changes.durable(), 10)
        await asyncio.wait_for(asyncio.shield(waiting[0]), 10)
        assert list(replayed(path)[0]) == ["thing:a", "thing:b"]
        await changes.stop()

    asyncio.run(scenario())


def test_a_failed_write_fails_its_waiters_and_goes_out_with_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.pickle"
    log = new_log(path)
    changes = Changes(log)
    real_write = os.write
    failing = True

    def write(fd: int, data: Any) -> int:
        if failing:
            raise OSError(28, "No space left on device")
        return int(real_write(fd, data))

    async def scenario() -> None:
        nonlocal failing
        changes.start(asyncio.get_running_loop())
        log.store["thing:a"] = Thing("a")
        changes.mark("thing:a")
        with pytest.raises(OSError, match="No space"):
            await asyncio.wait_for(changes.durable(), 10)
        failing = False
        log.store["thing:b"] = Thing("b")
        changes.mark("thing:b")
        await asyncio.wait_for(changes.durable(), 10)
        await changes.stop()

    monkeypatch.setattr(os, "write", write)
    asyncio.run(scenario())
    assert list(replayed(path)[0]) == ["thing:a", "thing:b"]


# --- on localstripe's own objects ----------------------------------------------------------


PAYMENT_INTENT = {"amount": 1050, "currency": "usd", "payment_method": "pm_card_visa"}


def test_localstripe_changes_made_in_place_are_logged(patched: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        patched.changes.start(asyncio.get_running_loop())
        customer = resources.Customer(email="a@example.com")
        for _ in range(3):
            intent = resources.PaymentIntent(**PAYMENT_INTENT, customer=customer.id)
            patched.changes.request_done(wrote=True)
            await patched.changes.durable()
            # A later request confirms it: only attributes change, nothing is stored again.
            resources.PaymentIntent._api_confirm(intent.id)
            patched.changes.request_done(wrote=True)
            await patched.changes.durable()
        patched.writer.write()  # a checkpoint between two PaymentIntents
        resources.PaymentIntent._api_create(**PAYMENT_INTENT, confirm=True)
        patched.changes.request_done(wrote=True)
        await patched.changes.durable()
        await patched.changes.stop()

    asyncio.run(scenario())
    expected = state(dict(resources.store))
    statuses = {obj.id: obj.status for obj in resources.store.values()
                if isinstance(obj, resources.PaymentIntent)}
    assert list(statuses.values()) == ["succeeded"] * 4

    # The next start: localstripe's own loader (patched) reads the checkpoint and the log.
    dict.clear(resources.store)
    patched.writer.dirty = False
    resources.store.try_load_from_disk()
    assert state(dict(resources.store)) == expected
    assert patched.writer.dirty  # the log is folded into a checkpoint soon
