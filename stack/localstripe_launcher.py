"""Runs localstripe 1.15.10 with every change on disk before its answer, and a checkpoint.

localstripe pickles its whole store to /tmp/localstripe.pickle on every write
(each object it creates, and again after every POST or DELETE): at 50,000
objects that is ~0.3 s of pickling per write, several writes per PaymentIntent.
Its loader also rewrites that file while still reading it (unpickling a Store
calls Store.__setitem__, which dumps), so a store of more than ~1,000 objects
cannot be loaded again and is truncated on disk. And every list endpoint scans
the whole store: exporting one PaymentIntent lists its charge's refunds six times.

This launcher starts localstripe's own entry point (localstripe.server.start)
with these replaced first; the HTTP API is unchanged:

  save_store_middleware     (in the app's middlewares) answers a request only once
                            the objects it stored, deleted, changed or read (to
                            change in place) are appended to the change log and
                            fsynced; one write serves all requests of that moment
  Store.dump_to_disk        only marks the store changed; a forked child pickles a
                            copy-on-write snapshot, the checkpoint, at most once per
                            --interval (the server never stops to pickle), and a
                            final one happens at SIGTERM/SIGINT; a checkpoint in
                            place deletes the log segments it covers
  Store.try_load_from_disk  reads --store, writing nothing while it does, then
                            replays the log's whole commits over it
  Store.__setitem__/__delitem__/clear/get, StripeObject.__setattr__
                            also note what changed, and keep an index of keys by type
  StripeObject._api_list_all     reads that index instead of scanning the store

A checkpoint goes to a temporary file beside the store, then os.replace: a kill -9
mid-write leaves the previous store whole, and the log still holds everything
since. The pickle is localstripe's own format. Each replaced function is compared
with the 1.15.10 source at start; any difference stops the launcher with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import gc
import hashlib
import inspect
import io
import os
import pickle
import signal
import struct
import sys
import textwrap
import time
import traceback
import warnings
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

WRITTEN_FOR = "1.15.10"
DEFAULT_STORE = Path("/tmp/localstripe.pickle")

# fingerprint() of everything the patch replaces or relies on, in localstripe 1.15.10.
FINGERPRINTS = {
    "resources.Store.try_load_from_disk": "dbece696d3bb719f",
    "resources.Store.dump_to_disk": "4c7c9452f5a1e1b4",
    "resources.Store.__setitem__": "20f6e7443e1ae928",
    "resources.Store.__delitem__": "96fab7526641a46a",
    "resources.StripeObject._api_list_all": "f53097a725a39fc1",
    "server.save_store_middleware": "394feb7a4edfe622",
    "server.flush_store": "80009c76f04f5945",
    "server.start": "590452e5b3d7e506",
}


class LauncherError(RuntimeError):
    """The installed localstripe is not the one this launcher was written for."""


def fingerprint(func: Callable[..., Any]) -> str:
    """A hash of a function's code, blind to indentation, blank lines and comments."""
    lines = textwrap.dedent(inspect.getsource(func)).splitlines()
    kept = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16]


def _own(module: ModuleType, dotted: str) -> Any:
    """module.Class.attr as defined in that class itself (not inherited), or KeyError."""
    obj: Any = module
    for part in dotted.split("."):
        namespace = vars(obj) if isinstance(obj, (type, ModuleType)) else {}
        if part not in namespace:
            raise KeyError(dotted)
        obj = namespace[part]
    return obj.__func__ if isinstance(obj, classmethod) else obj


def verify(resources: ModuleType, server: ModuleType) -> None:
    """Raises LauncherError unless everything the patch touches is as in 1.15.10."""
    installed = getattr(sys.modules.get("localstripe"), "__version__", "unknown")
    where = (f"stack/localstripe_launcher.py was written for localstripe {WRITTEN_FOR} "
             f"(installed: {installed})")
    modules = {"resources": resources, "server": server}
    for name, expected in FINGERPRINTS.items():
        module, _, dotted = name.partition(".")
        try:
            found = fingerprint(_own(modules[module], dotted))
        except KeyError:
            raise LauncherError(f"{where}: {name} is missing; the patch no longer "
                                "applies") from None
        except (OSError, TypeError) as err:
            raise LauncherError(f"{where}: cannot read {name}: {err}") from err
        if found != expected:
            raise LauncherError(f"{where}: {name} has changed; check that the patch still "
                                f"holds, then update FINGERPRINTS[{name!r}] to {found!r}")
    store = vars(resources).get("store")
    if not isinstance(store, resources.Store) or vars(server).get("store") is not store:
        raise LauncherError(f"{where}: localstripe.server no longer serves resources.store")
    app = vars(server).get("app")
    if app is None or app.frozen:
        raise LauncherError(f"{where}: localstripe.server.app is missing or already frozen")


# --- writing ---------------------------------------------------------------------


def pickle_dump(obj: object, file: BinaryIO) -> None:
    """What localstripe's own Store.dump_to_disk writes."""
    pickle.dump(obj, file, protocol=pickle.HIGHEST_PROTOCOL)


def temp_path(path: Path, pid: int | None = None) -> Path:
    """Where the launcher with this pid writes before renaming over `path`."""
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def atomic_dump(obj: object, path: Path, dump: Callable[[object, BinaryIO], None],
                *, temp: Path) -> None:
    """Writes obj to temp, then renames it over path: path is always whole."""
    try:
        with open(temp, "wb") as file:
            dump(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def sweep_temp_files(path: Path) -> list[Path]:
    """Removes what launchers killed mid-write left beside path (not a live one's)."""
    removed = []
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = temp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and not _alive(int(pid)):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the change log --------------------------------------------------------------
#
# Beside the store (the checkpoint) the launcher keeps numbered log segments,
# <store>.log.00000001, ...: each write of the store's objects is appended to the
# newest one and fsynced before localstripe answers the request that made it. A
# record is framed as length + CRC-32 + payload; the payload is an operation, a
# key and, for a set, the object pickled whole. The records of one commit end with
# a commit record, and replay applies whole commits only: a kill -9 mid-append
# leaves a torn tail that is ignored, and never half of a commit.

FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload
KEY_LENGTH = struct.Struct("<H")
SET, DELETE, CLEAR, COMMIT = b"S", b"D", b"C", b"E"
# Values that never stand for a stored object: persistent_id answers at once.
_PLAIN = frozenset({str, int, float, bool, type(None), bytes, dict, list, tuple, set})

Record = tuple[bytes, str, bytes]  # operation, key, pickled object (sets only)


def encode(op: bytes, key: str = "", value: bytes = b"") -> bytes:
    """One framed record."""
    raw = key.encode()
    payload = op + KEY_LENGTH.pack(len(raw)) + raw + value
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode(data: bytes) -> tuple[list[list[Record]], int]:
    """The whole commits in data, and where the last one ends: past that is a torn
    or corrupt tail (a bad length or checksum, or records with no commit record)."""
    commits: list[list[Record]] = []
    records: list[Record] = []
    pos = end = 0
    while pos + FRAME.size <= len(data):
        length, crc = FRAME.unpack_from(data, pos)
        payload = data[pos + FRAME.size:pos + FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc or length < 3:
            break
        pos += FRAME.size + length
        op = payload[:1]
        if op == COMMIT:
            commits.append(records)
            records = []
            end = pos
            continue
        (size,) = KEY_LENGTH.unpack_from(payload, 1)
        records.append((op, payload[3:3 + size].decode(), payload[3 + size:]))
    return commits, end


class _RefPickler(pickle.Pickler):
    """Pickles one stored object, and any other stored object it holds (a customer's
    cards) as a reference to its key: replay must find the store's own object
    there, as in the live store, not a copy of it."""

    def __init__(self, file: BinaryIO, stored: Callable[[object], str | None]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.stored = stored
        self.first = True

    def persistent_id(self, obj: Any) -> tuple[str, type] | None:
        if self.first:  # the object itself; a reference back to it below is by key
            self.first = False
            return None
        if type(obj) in _PLAIN:
            return None
        key = self.stored(obj)
        return None if key is None else (key, type(obj))


class _RefUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, resolve: Callable[[str, type], object]) -> None:
        super().__init__(file)
        self.resolve = resolve

    def persistent_load(self, pid: Any) -> object:
        key, cls = pid
        return self.resolve(key, cls)


class ChangeLog:
    """The store's changes since its checkpoint, in fsynced, append-only segments.

    key_of(obj) names the key an object would be stored under (None: not a
    storable object); whether it is stored there is checked against the store.
    """

    def __init__(self, path: Path, store: dict[str, Any],
                 key_of: Callable[[object], str | None]) -> None:
        self.path = path
        self.store = store
        self.key_of = key_of
        self._buffer = bytearray()
        self._fd: int | None = None
        self._seq = 0
        self._rotate = False
        self.commits = 0
        self.bytes = 0

    def segment(self, seq: int) -> Path:
        return self.path.with_name(f"{self.path.name}.log.{seq:08d}")

    def segments(self) -> list[tuple[int, Path]]:
        """The segments on disk, oldest first."""
        found = []
        for seg in self.path.parent.glob(f"{self.path.name}.log.*"):
            suffix = seg.name[len(self.path.name) + len(".log."):]
            if suffix.isdigit():
                found.append((int(suffix), seg))
        return sorted(found)

    def _stored(self, obj: object) -> str | None:
        key = self.key_of(obj)
        return key if key is not None and dict.get(self.store, key) is obj else None

    # writing

    def stage(self, keys: Iterable[str]) -> None:
        """Adds each key's record to the next commit: the object as it is now, or
        its deletion if the store no longer has it."""
        for key in keys:
            obj = dict.get(self.store, key)
            if obj is None:
                self._buffer += encode(DELETE, key)
                continue
            file = io.BytesIO()
            _RefPickler(file, self._stored).dump(obj)
            self._buffer += encode(SET, key, file.getvalue())

    def stage_clear(self) -> None:
        self._buffer += encode(CLEAR)

    @property
    def staged(self) -> bool:
        return bool(self._buffer)

    def take(self) -> bytes:
        """What was staged, closed by a commit record: the next write."""
        data = bytes(self._buffer) + encode(COMMIT)
        self._buffer.clear()
        return data

    def untake(self, data: bytes) -> None:
        """Puts back a write that failed, to go first in the next one."""
        self._buffer[:0] = data

    def rotate(self) -> int:
        """For a checkpoint of the store as it is now: the next write starts a new
        segment. Returns the last segment that checkpoint covers (a write under way
        may still be adding to it: what it adds was staged before now)."""
        self._rotate = True
        return max([self._seq] + [seq for seq, _ in self.segments()])

    def write(self, data: bytes, *, new_segment: bool = False) -> None:
        """Appends data in one write and fsyncs it. One write at a time (the writer
        thread, or the caller when none runs).

        On an error the next write goes to a new segment: whatever part of this one
        reached the file is an incomplete commit at its end, which replay ignores."""
        try:
            if new_segment:
                self._close()
            fd = self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            self._close()
            raise
        self.commits += 1
        self.bytes += len(data)

    def commit(self) -> None:
        """Writes what was staged, now, in this thread (no writer thread running)."""
        if not self._buffer:
            return
        new_segment, self._rotate = self._rotate, False
        data = self.take()
        try:
            self.write(data, new_segment=new_segment)
        except BaseException:
            self.untake(data)
            raise

    def submit(self) -> tuple[bytes, bool]:
        """What the writer thread writes next, and whether in a new segment."""
        new_segment, self._rotate = self._rotate, False
        return self.take(), new_segment

    def _open(self) -> int:
        if self._fd is None:
            # Never append to a segment of an earlier run: it may end in a torn record.
            last = max((seq for seq, _ in self.segments()), default=0)
            self._seq = max(self._seq, last) + 1
            self._fd = os.open(self.segment(self._seq),
                               os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                               0o644)
            fsync_dir(self.path.parent)  # the new file's name is durable too
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def drop_through(self, seq: int) -> int:
        """After a checkpoint that covers segments up to seq was renamed into place:
        makes that rename durable, then deletes those segments."""
        fsync_dir(self.path.parent)
        dropped = 0
        for number, seg in self.segments():
            if number <= seq:
                seg.unlink(missing_ok=True)
                dropped += 1
        if dropped:
            fsync_dir(self.path.parent)
        return dropped

    def close(self) -> None:
        self._close()

    # reading

    def replay(self) -> tuple[int, int]:
        """Applies every whole commit of every segment to the store, in order; returns
        the commits applied and the segments that ended in a torn or corrupt tail.

        A record holds an object's whole state, so applying one the checkpoint
        already has (a crash before its segments were deleted) changes nothing that
        later records do not set again. An object already in the store is updated in
        place, so every other object holding it sees the new state."""
        shells: dict[str, object] = {}

        def resolve(key: str, cls: type) -> object:
            # A stored object a record refers to: the store's, or a blank one that
            # its own record (later in the log) fills.
            obj = dict.get(self.store, key)
            if obj is None:
                obj = shells.get(key)
                if obj is None:
                    obj = shells[key] = object.__new__(cls)
            return obj

        applied = torn = 0
        for _, seg in self.segments():
            data = seg.read_bytes()
            commits, end = decode(data)
            if end < len(data):
                torn += 1
                _log(f"{seg}: ignoring {len(data) - end} bytes after its last whole commit "
                     "(a write cut short)")
            for records in commits:
                for op, key, value in records:
                    if op == SET:
                        self._apply(key, _RefUnpickler(io.BytesIO(value), resolve).load(),
                                    shells)
                    elif op == DELETE:
                        dict.pop(self.store, key, None)
                    elif op == CLEAR:
                        dict.clear(self.store)
                        shells.clear()
                applied += 1
        missing = [key for key in shells if key not in self.store]
        if missing:
            _log(f"the log refers to {len(missing)} objects it never stored, e.g. {missing[0]}")
        return applied, torn

    def _apply(self, key: str, new: object, shells: dict[str, object]) -> None:
        old = dict.get(self.store, key)
        if old is None:
            old = shells.pop(key, None)
        if old is not None and old is not new and type(old) is type(new) \
                and hasattr(old, "__dict__"):
            vars(old).clear()
            vars(old).update(vars(new))
            new = old
        dict.__setitem__(self.store, key, new)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Changes:
    """The keys changed since they were last logged, and the group commit that logs
    them: one writer thread appends and fsyncs, in one write, every object changed
    since its previous write began (pickled as that write begins). A request is
    answered only once a write that began after its changes is done.

    localstripe changes objects in place (a confirm sets the PaymentIntent's status
    without storing it again), so what a write request read from the store is
    logged too, besides what was stored, deleted or assigned to."""

    def __init__(self, log: ChangeLog, on_commit: Callable[[], None] = lambda: None) -> None:
        self.log = log
        self.on_commit = on_commit
        self.changed: dict[str, None] = {}  # keys in the order first changed
        self.touched: dict[str, None] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.failures = 0
        self._staging = False  # a call to _stage is scheduled
        # Done once what changed since the last write began is on disk.
        self._next: asyncio.Future[None] | None = None
        self._running: asyncio.Future[None] | None = None  # done when the write under way is
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def active(self) -> bool:
        return self.loop is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "localstripe-log")

    def mark(self, key: str) -> None:
        if self.loop is not None:
            self.changed[key] = None
            self._schedule()

    def touch(self, key: str) -> None:
        if self.loop is not None:
            self.touched[key] = None

    def cleared(self) -> None:
        if self.loop is not None:
            self.changed.clear()
            self.touched.clear()
            self.log.stage_clear()
            self._schedule()

    def request_done(self, *, wrote: bool) -> None:
        """At the end of a request: what a write request read is logged too."""
        if wrote and self.touched:
            self.changed.update(self.touched)
            self._schedule()
        self.touched.clear()

    async def durable(self) -> None:
        """Returns once everything changed so far is on disk (raises if it failed)."""
        # Writes end in order: the last one to begin covers all before it.
        waiting = self._next if self._next is not None else self._running
        if waiting is not None:
            # Shielded: a request that goes away must not cancel others' write.
            await asyncio.shield(waiting)

    def _schedule(self) -> None:
        assert self.loop is not None
        if self._next is None:
            self._next = self.loop.create_future()
        if not self._staging:
            self._staging = True
            self.loop.call_soon(self._stage)

    def _stage(self) -> None:
        self._staging = False
        self._submit()

    def _submit(self) -> None:
        """Starts a write of everything changed so far, unless one is under way (its
        end calls this again)."""
        if self._running is not None or self.loop is None or self._thread is None:
            return
        done, self._next = self._next, None
        if done is None:
            return
        # Pickled here, in the loop's thread, between two of its steps: every object
        # is whole. Only bytes go to the writer thread.
        keys, self.changed = self.changed, {}
        try:
            self.log.stage(keys)
        except Exception as err:
            self._fail(done, err, f"staging {len(keys)} changes")
            return
        if not self.log.staged:
            done.set_result(None)
            return
        data, new_segment = self.log.submit()
        self._running = done
        write = self.loop.run_in_executor(
            self._thread, functools.partial(self.log.write, data, new_segment=new_segment))
        write.add_done_callback(functools.partial(self._written, done, data))

    def _written(self, done: asyncio.Future[None], data: bytes,
                 write: asyncio.Future[None]) -> None:
        self._running = None
        err = write.exception()
        if err is not None:
            # Written again with the next changes, if any come.
            self.log.untake(data)
            self._fail(done, err, "writing to the log")
            return
        self.on_commit()
        done.set_result(None)
        self._submit()  # what was staged meanwhile

    def _fail(self, done: asyncio.Future[None] | None, err: BaseException, what: str) -> None:
        self.failures += 1
        _log(f"{what} failed; the requests waiting for it fail\n"
             + "".join(traceback.format_exception(err)))
        if done is not None and not done.done():
            done.set_exception(err)
            done.add_done_callback(lambda future: future.exception())  # retrieved

    async def stop(self) -> None:
        """At exit: waits for the write under way, then writes what is left here."""
        while self._running is not None:
            try:
                await asyncio.shield(self._running)
            except Exception:
                break
        self.loop = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        keys, self.changed = self.changed, {}
        self.log.stage(keys)
        self.log.commit()
        if self._next is not None and not self._next.done():
            self._next.set_result(None)
        self._next = None


# A write happens at most once per this many times its own duration.
WRITE_SPACING = 5.0


class StoreWriter:
    """Writes one store to a file at most once per interval, and only after a change.

    With fork (the default) a child process pickles a copy-on-write snapshot of
    the store while the server goes on answering. localstripe runs in one thread
    and the fork happens in a task of its event loop, so the snapshot falls
    between two steps of the loop, never inside an operation. Without fork, or
    at close, the write happens in this process.

    With a change log, each write is a checkpoint: the log moves to a new segment
    as the snapshot is taken, and the segments the written file covers are deleted
    once it is in place.
    """

    def __init__(self, store: dict[str, Any], path: Path, *, interval: float = 1.0,
                 fork: bool = True,
                 dump: Callable[[object, BinaryIO], None] = pickle_dump,
                 log: ChangeLog | None = None) -> None:
        self.store = store
        self.path = path
        self.interval = interval
        self.fork = fork
        self.dump = dump
        self.log = log
        self._covers = 0  # the last log segment the write under way covers
        self.dirty = False
        self.writes = 0
        self.failures = 0
        self._child: int | None = None
        self._last = float("-inf")
        self._spawned_at = 0.0
        # How long the last forked write took: a store of tens of thousands of
        # objects pickles for about a second, and writing it every second would
        # take a core from the server the worker is waiting on.
        self.last_took = 0.0

    @property
    def period(self) -> float:
        """The spacing of writes: the interval, or five times a write's own
        length, so the writer never uses more than about a fifth of a core."""
        return max(self.interval, WRITE_SPACING * self.last_took)

    def mark_dirty(self) -> None:
        self.dirty = True

    @property
    def writing(self) -> bool:
        """A forked child is writing the store."""
        return self._child is not None

    def write(self) -> None:
        """Writes the store now, in this process."""
        self.dirty = False
        covers = self.log.rotate() if self.log is not None else 0
        try:
            atomic_dump(self.store, self.path, self.dump, temp=temp_path(self.path))
        except BaseException:
            self.dirty = True
            self.failures += 1
            raise
        self.writes += 1
        self._written(covers)

    def _written(self, covers: int) -> None:
        if self.log is None:
            return
        try:
            self.log.drop_through(covers)
        except OSError:
            # The segments stay, and are replayed over this checkpoint: no harm.
            _log(f"deleting log segments up to {covers} failed\n" + traceback.format_exc())

    def tick(self, now: float) -> None:
        """Reaps a finished child, and starts a write if one is due."""
        if self._child is not None:
            self._reap(block=False)
        if self._child is None and self.dirty and now - self._last >= self.period:
            self._last = now
            try:
                if self.fork:
                    self._spawn()
                else:
                    self.write()
            except Exception:
                _log(f"writing {self.path} failed; retrying in {self.period:g}s\n"
                     + traceback.format_exc())

    def next_tick(self, now: float) -> float:
        """Seconds until tick has something to do: a child to reap, a write due, or
        (nothing changed yet) a look again in one interval."""
        if self._child is not None:
            return 0.02
        if not self.dirty:
            return self.period
        return max(0.02, self._last + self.period - now)

    def close(self, timeout: float = 60.0) -> bool:
        """Waits for a write under way, then writes what changed since (True if
        there was anything)."""
        deadline = time.monotonic() + timeout
        while self._child is not None and time.monotonic() < deadline:
            self._reap(block=False)
            time.sleep(0.01)
        if self._child is not None:
            _log(f"the writer child {self._child} is stuck; killing it")
            os.kill(self._child, signal.SIGKILL)
            self._reap(block=True)
        if not self.dirty:
            return False
        self.write()
        return True

    def _spawn(self) -> None:
        self.dirty = False
        temp = temp_path(self.path)
        self._spawned_at = time.monotonic()
        # Between two steps of the loop, as the snapshot: commits from here on go to
        # a new segment, which this write does not cover.
        covers = self.log.rotate() if self.log is not None else 0
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about forking a threaded process (aiohttp's
                # resolver threads): the child takes no lock those threads may hold,
                # it only pickles, writes a file of its own and exits.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError as err:
            _log(f"fork failed ({err}); writing {self.path} in process")
            self.write()
            return
        if pid == 0:
            self._child_write(temp)
        self._child = pid
        self._covers = covers

    def _child_write(self, temp: Path) -> None:
        code = 1
        try:
            # The parent's asyncio signal handling must not see this child's signals,
            # and a SIGTERM to the process group must end the child at once.
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            gc.disable()
            atomic_dump(self.store, self.path, self.dump, temp=temp)
            code = 0
        except BaseException:
            # Straight to fd 2: sys.stderr's lock may belong to a thread of the parent.
            os.write(2, f"writing {self.path} failed:\n{traceback.format_exc()}".encode())
        finally:
            os._exit(code)

    def _reap(self, *, block: bool) -> None:
        assert self._child is not None
        pid, status = os.waitpid(self._child, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        self._child = None
        if os.waitstatus_to_exitcode(status) == 0:
            self.writes += 1
            self.last_took = time.monotonic() - self._spawned_at
            self._written(self._covers)
        else:
            # Whatever it was writing is still to be written.
            self.dirty = True
            self.failures += 1
            temp_path(self.path).unlink(missing_ok=True)

    async def run(self) -> None:
        while True:
            self.tick(time.monotonic())
            await asyncio.sleep(self.next_tick(time.monotonic()))


# --- the index of keys by object type --------------------------------------------


class TypeIndex:
    """The store's keys by object type ("payment_intent:pi_1" is a payment_intent),
    each type's keys in the store's own order, so listing one type costs what it
    returns. Keys only; values are read from the store when listed."""

    def __init__(self) -> None:
        self._keys: dict[str, dict[str, None]] = {}
        self._count = 0

    @staticmethod
    def kind(key: str) -> str:
        return key.partition(":")[0]

    def add(self, key: str) -> None:
        keys = self._keys.setdefault(self.kind(key), {})
        if key not in keys:
            keys[key] = None
            self._count += 1

    def discard(self, key: str) -> None:
        keys = self._keys.get(self.kind(key), {})
        if key in keys:
            del keys[key]
            self._count -= 1

    def rebuild(self, store: dict[str, object]) -> None:
        self._keys = {}
        self._count = 0
        for key in store:
            self.add(key)

    def values(self, store: dict[str, object], kind: str) -> list[object]:
        # Everything that adds to the store goes through __setitem__ (add) except
        # the loader, which rebuilds; a clear() (DELETE /_config/data) bypasses
        # discard, and shows as a count that no longer matches.
        if self._count != len(store):
            self.rebuild(store)
        return [store[key] for key in self._keys.get(kind, ())]


# --- the patch -------------------------------------------------------------------


class Patch:
    """The attributes install() replaced or added, to put back (tests do), and what
    runs beside the server: the change log and the checkpoint writer."""

    def __init__(self, writer: StoreWriter, index: TypeIndex, changes: Changes) -> None:
        self.writer = writer
        self.index = index
        self.changes = changes
        self.log = changes.log
        self.from_scratch = False
        self.saved: list[tuple[type, str, object]] = []

    def replace(self, owner: type, name: str, value: object) -> None:
        self.saved.append((owner, name, vars(owner)[name]))
        setattr(owner, name, value)

    def add(self, owner: type, name: str, value: object) -> None:
        """Defines what owner only inherited so far (undo deletes it again)."""
        assert name not in vars(owner), name
        self.saved.append((owner, name, _ABSENT))
        setattr(owner, name, value)

    def original(self, owner: type, name: str) -> Any:
        return next(old for cls, attr, old in self.saved if cls is owner and attr == name)

    def undo(self) -> None:
        for owner, name, old in reversed(self.saved):
            if old is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, old)
        self.saved.clear()

    async def middleware(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        """In place of localstripe's save_store_middleware: no answer, not even an
        error, leaves before what the request changed is on disk."""
        try:
            return await handler(request)
        finally:
            wrote = request.method in ("PUT", "POST", "DELETE")
            if wrote:
                self.writer.mark_dirty()
            self.changes.request_done(wrote=wrote)
            # Reads wait too, for a commit of this turn: they may show what it holds.
            await self.changes.durable()

    async def context(self, _app: object) -> AsyncIterator[None]:
        """An aiohttp cleanup_ctx: commits changes and writes checkpoints in the
        background while the app runs, and a last checkpoint after it stopped
        answering (SIGTERM and SIGINT end run_app)."""
        if self.from_scratch:
            # Durably empty before the first answer, whatever older segments hold.
            self.log.stage_clear()
            self.log.commit()
        self.changes.start(asyncio.get_running_loop())
        task = asyncio.create_task(self.writer.run())
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await self.changes.stop()
        done = "written" if self.writer.close() else "unchanged since its last write"
        self.log.close()
        _log(f"store {done} at exit: {len(self.writer.store)} objects in {self.writer.path} "
             f"(writes since start: {self.writer.writes}, log commits: {self.log.commits})")


_ABSENT = object()


def stored_key(obj: object) -> str | None:
    """The key localstripe stores an object under: "<object>:<id>", or "<object>"
    for the one without an id (the balance); None for what it never stores."""
    kind = getattr(type(obj), "object", None)
    if not isinstance(kind, str):
        return None
    ident = getattr(obj, "__dict__", {}).get("id")
    return kind if ident is None else f"{kind}:{ident}"


def install(resources: ModuleType, path: Path, *, interval: float = 1.0,
            fork: bool = True) -> Patch:
    """Replaces localstripe's store writes, load and list scan (verify first).

    Until Patch.context starts, changes are only marked for the checkpoint, not
    logged (tests and the bench's seeding run without a server)."""
    store_cls, live = resources.Store, resources.store
    log = ChangeLog(path, live, stored_key)
    writer = StoreWriter(live, path, interval=interval, fork=fork, log=log)
    changes = Changes(log, on_commit=writer.mark_dirty)
    index = TypeIndex()
    patch = Patch(writer, index, changes)
    set_item, del_item = vars(store_cls)["__setitem__"], vars(store_cls)["__delitem__"]

    def dump_to_disk(self: dict[str, object]) -> None:
        # Called by __setitem__, __delitem__ and after every POST, PUT or DELETE.
        # Unpickling a Store calls __setitem__ on the new one, not on this one.
        if self is live:
            writer.mark_dirty()

    def try_load_from_disk(self: dict[str, object]) -> None:
        started = time.monotonic()
        try:
            with open(path, "rb") as file:
                old = pickle.load(file)
        except FileNotFoundError:
            old = None
        except EOFError as err:
            # Named like the other truncations, so stackctl's recovery applies.
            raise pickle.UnpicklingError(f"{path} is truncated: {err}") from err
        if self is not live:
            if old is not None:
                dict.clear(self)
                dict.update(self, old)
            return
        if old is None and not log.segments():
            return
        # dict's own methods: nothing here is a change to log.
        dict.clear(self)
        dict.update(self, old or {})
        loaded = len(self)
        replayed, torn = log.replay()
        if replayed or torn:
            writer.mark_dirty()  # a checkpoint soon folds the log in
        index.rebuild(self)
        _log(f"loaded {loaded} objects from {path} and {replayed} commits from its log "
             f"({len(self)} objects) in {time.monotonic() - started:.1f}s")

    def setitem(self: dict[str, object], key: str, value: object) -> None:
        set_item(self, key, value)
        if self is live:
            index.add(key)
            changes.mark(key)

    def delitem(self: dict[str, object], key: str) -> None:
        del_item(self, key)
        if self is live:
            index.discard(key)
            changes.mark(key)

    def clear(self: dict[str, object]) -> None:
        # DELETE /_config/data.
        dict.clear(self)
        if self is live:
            writer.mark_dirty()
            changes.cleared()

    def get(self: dict[str, object], key: str, default: object = None) -> object:
        # How localstripe reads an object before changing it in place.
        value = dict.get(self, key, _ABSENT)
        if value is _ABSENT:
            return default
        if self is live:
            changes.touch(key)
        return value

    def setattr_(self: object, name: str, value: object) -> None:
        # A change to an object already stored (a charge set to succeeded by a
        # callback half a second after its request, for one).
        object.__setattr__(self, name, value)
        if changes.active:
            key = stored_key(self)
            if key is not None and dict.get(live, key) is self:
                changes.mark(key)

    def api_list_all(cls: Any, /, url: str, limit: object = None, starting_after: object = None,
                     **kwargs: object) -> Any:
        # localstripe 1.15.10's StripeObject._api_list_all, with the index for the scan.
        if kwargs:
            raise resources.UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        li = resources.List(url, limit=limit, starting_after=starting_after)
        li._list = index.values(live, cls.object)
        return li

    patch.replace(store_cls, "dump_to_disk", dump_to_disk)
    patch.replace(store_cls, "try_load_from_disk", try_load_from_disk)
    patch.replace(store_cls, "__setitem__", setitem)
    patch.replace(store_cls, "__delitem__", delitem)
    patch.add(store_cls, "clear", clear)
    patch.add(store_cls, "get", get)
    patch.add(resources.StripeObject, "__setattr__", setattr_)
    patch.replace(resources.StripeObject, "_api_list_all", classmethod(api_list_all))
    index.rebuild(live)
    return patch


def _log(message: str) -> None:
    print(f"localstripe-launcher: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="localstripe_launcher.py",
        description="Start localstripe (its own server.start) with each change appended "
        "to a log and fsynced before it answers, and its store checkpointed at most once "
        "per --interval, atomically, and at exit; it loads stores of any size, and list "
        "endpoints no longer scan the whole store. Same HTTP API, same pickle format.",
        epilog=f"Written for localstripe {WRITTEN_FOR}: it refuses to start if anything "
        "it patches has changed. Stop it with SIGTERM or SIGINT (a final write, then exit).")
    parser.add_argument("--port", type=int, default=8420, metavar="N",
                        help="TCP port (default 8420)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="start with an empty store (the file is replaced within "
                        "--interval) instead of loading --store")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, metavar="PATH",
                        help=f"the pickle file to load and write (default {DEFAULT_STORE}, "
                        "localstripe's own)")
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="at most one checkpoint per this many seconds (default 1)")
    return parser.parse_args(argv)


def replace_middleware(app: Any, old: object, new: Callable[[Any, Any], Any]) -> None:
    """Puts new where old is in app's middlewares (before the app starts)."""
    if app.frozen or old not in app.middlewares:
        raise LauncherError("localstripe.server.app no longer runs save_store_middleware")

    async def middleware(request: Any, handler: Any) -> Any:
        return await new(request, handler)

    middleware.__middleware_version__ = 1  # type: ignore[attr-defined]  # aiohttp's new style
    app.middlewares[list(app.middlewares).index(old)] = middleware


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import localstripe
    from localstripe import resources, server

    try:
        verify(resources, server)
    except LauncherError as err:
        _log(str(err))
        return 2
    store = args.store.resolve()
    for stale in sweep_temp_files(store):
        _log(f"removed {stale}, left by a launcher killed while writing")
    patch = install(resources, store, interval=args.interval)
    patch.from_scratch = args.from_scratch
    try:
        replace_middleware(server.app, server.save_store_middleware, patch.middleware)
    except LauncherError as err:
        _log(str(err))
        return 2
    server.app.cleanup_ctx.append(patch.context)
    if args.from_scratch:
        # So the first checkpoint replaces the old store.
        patch.writer.mark_dirty()
    # localstripe's own entry point, which reads --port and --from-scratch.
    sys.argv = [sys.argv[0], "--port", str(args.port)] + (
        ["--from-scratch"] if args.from_scratch else [])
    _log(f"localstripe {localstripe.__version__} on port {args.port}, store {store}, "
         f"each change logged before its answer, checkpoints at most every "
         f"{args.interval:g}s")
    server.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
