"""The store's change log: numbered, append-only segments of framed, checksummed records,
each write fsynced before localstripe answers, replayed whole commits at a time."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from stack.localstripe.files import fsync_dir
from stack.localstripe.report import say

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
                say(f"{seg}: ignoring {len(data) - end} bytes after its last whole commit "
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
            say(f"the log refers to {len(missing)} objects it never stored, e.g. {missing[0]}")
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
