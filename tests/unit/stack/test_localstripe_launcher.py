"""stack.localstripe (the launcher): the shape check, the throttled atomic writer, the index."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import pytest

with warnings.catch_warnings():
    # localstripe's server registers plain functions as handlers, which aiohttp deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import resources, server

from stack.errors import LauncherError
from stack.localstripe.checkpoint import StoreWriter
from stack.localstripe.compat import verify
from stack.localstripe.files import atomic_dump, pickle_dump, sweep_temp_files, temp_path


def load(path: Path) -> Any:
    # Only plain dicts here: unpickling a localstripe Store with its own
    # __setitem__ in place would write /tmp/localstripe.pickle.
    with open(path, "rb") as file:
        return pickle.load(file)


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


# --- what the patch touches --------------------------------------------------------


def test_the_installed_localstripe_has_what_the_patch_was_written_for() -> None:
    verify(resources, server)


def _module_like(real: ModuleType, **replaced: object) -> ModuleType:
    fake = ModuleType(real.__name__)
    fake.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")})
    fake.__dict__.update(replaced)
    return fake


def _store_like(**replaced: object) -> type:
    """localstripe's Store class as it might be in another release."""
    # Not __init__: its super() names the real Store. Not the slots type() makes itself.
    skip = ("__init__", "__dict__", "__weakref__")
    body = {k: v for k, v in vars(resources.Store).items() if k not in skip}
    body.update(replaced)
    return type("Store", (dict,), {k: v for k, v in body.items() if v is not None})


def test_a_changed_function_stops_the_launcher_naming_the_version() -> None:
    def dump_to_disk(self: dict[str, object]) -> None:
        with open("/elsewhere.pickle", "wb") as file:
            pickle.dump(self, file)

    store_cls = _store_like(dump_to_disk=dump_to_disk)
    fake = _module_like(resources, Store=store_cls, store=store_cls())
    with pytest.raises(LauncherError,
                       match=r"written for localstripe 1\.15\.10.*Store\.dump_to_disk has changed"):
        verify(fake, server)


@pytest.mark.parametrize("missing", ["try_load_from_disk", "__setitem__"])
def test_a_missing_function_stops_the_launcher(missing: str) -> None:
    store_cls = _store_like(**{missing: None})
    fake = _module_like(resources, Store=store_cls, store=store_cls())
    with pytest.raises(LauncherError, match=rf"1\.15\.10.*{missing}.*missing"):
        verify(fake, server)


def test_a_server_that_no_longer_calls_back_after_writes_stops_the_launcher() -> None:
    async def save_store_middleware(request: object, handler: Any) -> object:
        return await handler(request)

    fake = _module_like(server, save_store_middleware=save_store_middleware)
    with pytest.raises(LauncherError, match="save_store_middleware has changed"):
        verify(resources, fake)


# --- the writer ----------------------------------------------------------------------


class CountingDump:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, obj: object, file: BinaryIO) -> None:
        self.calls += 1
        pickle_dump(obj, file)


def failing_dump(obj: object, file: BinaryIO) -> None:
    file.write(b"\x80\x05half a pickle")
    raise RuntimeError("disk full")


def test_many_changes_are_written_at_most_once_per_interval(tmp_path: Path) -> None:
    store: dict[str, int] = {}
    dump = CountingDump()
    writer = StoreWriter(store, tmp_path / "s.pickle", interval=1.0, fork=False,
                                  dump=dump)
    for ms in range(3500):  # a change every millisecond for 3.5 s
        store[f"k{ms}"] = ms
        writer.mark_dirty()
        writer.tick(ms / 1000)
    assert dump.calls == 4  # at 0, 1, 2 and 3 s
    assert len(load(tmp_path / "s.pickle")) == 3001
    writer.close()
    assert dump.calls == 5
    assert load(tmp_path / "s.pickle") == store


def test_nothing_is_written_without_a_change_and_each_change_is(tmp_path: Path) -> None:
    store = {"customer:cus_1": "ada", "customer:cus_2": "grace"}
    dump = CountingDump()
    writer = StoreWriter(store, tmp_path / "s.pickle", interval=1.0, fork=False,
                                  dump=dump)
    writer.mark_dirty()
    writer.tick(0.0)
    for second in range(1, 5):
        writer.tick(float(second))
    writer.close()
    assert dump.calls == 1

    store["customer:cus_3"] = "edsger"
    del store["customer:cus_1"]
    writer.mark_dirty()
    writer.tick(5.0)
    assert dump.calls == 2
    assert load(tmp_path / "s.pickle") == {"customer:cus_2": "grace", "customer:cus_3": "edsger"}


def test_the_writer_wakes_for_a_due_write_and_otherwise_once_an_interval(
        tmp_path: Path) -> None:
    writer = StoreWriter({}, tmp_path / "s.pickle", interval=1.0, fork=False)
    assert writer.next_tick(0.0) == 1.0
    writer.mark_dirty()
    writer.tick(10.0)
    writer.mark_dirty()
    assert writer.next_tick(10.25) == pytest.approx(0.75)
    writer.tick(11.0)
    assert writer.next_tick(11.0) == 1.0


def test_a_store_slow_to_write_is_written_less_often(tmp_path: Path) -> None:
    dump = CountingDump()
    writer = StoreWriter({}, tmp_path / "s.pickle", interval=1.0, fork=False,
                                  dump=dump)
    writer.last_took = 0.8  # a big store: its pickle took 0.8 s
    assert writer.period == pytest.approx(4.0)
    writer.mark_dirty()
    writer.tick(0.0)
    writer.mark_dirty()
    writer.tick(1.0)
    writer.tick(3.9)
    assert dump.calls == 1
    writer.tick(4.0)
    assert dump.calls == 2


def test_an_interrupted_write_leaves_the_old_store_whole_and_is_retried(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.pickle"
    store = {"charge:ch_1": 100}
    writer = StoreWriter(store, path, interval=1.0, fork=False)
    writer.mark_dirty()
    writer.tick(0.0)
    before = path.read_bytes()

    store["charge:ch_2"] = 200
    writer.dump = failing_dump
    writer.mark_dirty()
    writer.tick(1.0)
    assert "disk full" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []
    assert writer.dirty and writer.failures == 1

    writer.dump = pickle_dump
    writer.tick(2.0)
    assert load(path) == {"charge:ch_1": 100, "charge:ch_2": 200}


def test_atomic_dump_never_leaves_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    path.write_bytes(pickle.dumps({"old": 1}))
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_dump({"new": 2}, path, failing_dump, temp=temp_path(path))
    assert load(path) == {"old": 1}
    assert temp_files(tmp_path) == []


def test_temp_files_of_dead_launchers_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    dead = temp_path(path, pid=2**22 + 1)  # above Linux's largest pid
    live = temp_path(path)
    dead.write_bytes(b"half")
    live.write_bytes(b"writing")
    assert sweep_temp_files(path) == [dead]
    assert temp_files(tmp_path) == [live]


# --- the patch on localstripe itself -------------------------------------------------


def _ids(patch: Any, cls: type, *, original: bool) -> list[str]:
    if original:
        list_all = patch.original(resources.StripeObject, "_api_list_all").__get__(None, cls)
    else:
        list_all = cls._api_list_all
    return [obj.id for obj in list_all("/v1/x")._list]


def test_listing_through_the_index_returns_what_the_scan_did(patched: Any) -> None:
    kinds = (resources.PaymentIntent, resources.Coupon)
    for i in range(30):
        resources.PaymentIntent(amount=100 + i, currency="usd")
        resources.Coupon(id=f"c:{i}", duration="once", percent_off=10)
    resources.Coupon._api_delete("c:3")
    resources.Coupon(id="c:3", duration="forever", percent_off=5)  # back, at the end
    resources.Coupon._api_delete("c:7")
    for cls in kinds:
        assert _ids(patched, cls, original=False) == _ids(patched, cls, original=True)
    assert _ids(patched, resources.Coupon, original=False)[-1] == "c:3"
    assert len(_ids(patched, resources.Coupon, original=False)) == 29

    resources.store.clear()  # DELETE /_config/data
    resources.Coupon(id="c:new", duration="once", percent_off=1)
    for cls in kinds:
        assert _ids(patched, cls, original=False) == _ids(patched, cls, original=True)


def test_creating_objects_marks_the_store_changed_and_writes_nothing_at_once(
        patched: Any, tmp_path: Path) -> None:
    resources.PaymentIntent(amount=100, currency="usd")
    assert patched.writer.dirty
    assert not (tmp_path / "s.pickle").exists()


def test_a_large_store_loads_whole_without_writing_while_it_reads(
        patched: Any, tmp_path: Path) -> None:
    path = tmp_path / "s.pickle"
    saved = resources.Store()
    for i in range(3000):  # localstripe itself truncates the file past ~1,000
        dict.__setitem__(saved, f"coupon:c{i}", i)
    path.write_bytes(pickle.dumps(saved, protocol=pickle.HIGHEST_PROTOCOL))
    before = path.stat()

    resources.store.try_load_from_disk()
    assert len(resources.store) == 3000
    assert not patched.writer.dirty
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == \
        (before.st_ino, before.st_mtime_ns, before.st_size)
    assert patched.index.values(resources.store, "coupon")[:3] == [0, 1, 2]


def test_a_truncated_store_fails_as_an_unpickling_error(patched: Any, tmp_path: Path) -> None:
    (tmp_path / "s.pickle").write_bytes(b"")
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        resources.store.try_load_from_disk()


def test_a_missing_store_starts_empty(patched: Any) -> None:
    resources.store.try_load_from_disk()
    assert len(resources.store) == 0
    assert os.listdir(patched.writer.path.parent) == []
