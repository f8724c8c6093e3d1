"""The launcher's store writer in a forked child: it writes the store as it was at fork,
and a child that fails leaves the old store and the change still to write."""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from stack.localstripe.checkpoint import StoreWriter
from testkit.waiting import wait_until


def load(path: Path) -> Any:
    with open(path, "rb") as file:
        return pickle.load(file)


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def failing_dump(obj: object, file: BinaryIO) -> None:
    file.write(b"\x80\x05half a pickle")
    raise RuntimeError("disk full")


def _reaped(writer: Any) -> bool:
    writer.tick(time.monotonic())
    return not writer.writing


def test_a_forked_writer_writes_the_store_as_it_was_at_fork(tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    store = {"payment_intent:pi_1": "succeeded"}
    writer = StoreWriter(store, path, interval=60.0)
    writer.mark_dirty()
    writer.tick(time.monotonic())
    assert writer.writing
    # Changed while the child writes: not in its snapshot, and still to write.
    store["payment_intent:pi_2"] = "processing"
    writer.mark_dirty()
    wait_until(lambda: _reaped(writer), timeout=30, what="the writer child to exit")
    assert load(path) == {"payment_intent:pi_1": "succeeded"}
    assert writer.writes == 1 and writer.dirty

    writer.close()
    assert load(path) == store
    assert temp_files(tmp_path) == []


def test_a_forked_writer_that_fails_leaves_the_old_store_and_keeps_the_change(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.pickle"
    path.write_bytes(pickle.dumps({"old": 1}))
    writer = StoreWriter({"new": 2}, path, interval=1.0, dump=failing_dump)
    writer.mark_dirty()
    writer.tick(time.monotonic())
    wait_until(lambda: _reaped(writer), timeout=30, what="the writer child to exit")
    assert "disk full" in capfd.readouterr().err
    assert load(path) == {"old": 1}
    assert writer.dirty and writer.failures == 1 and writer.writes == 0
    assert temp_files(tmp_path) == []
