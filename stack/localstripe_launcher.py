"""Runs localstripe 1.15.10 with its store written at most every second (less often when big).

localstripe pickles its whole store to /tmp/localstripe.pickle on every write
(each object it creates, and again after every POST or DELETE): at 50,000
objects that is ~0.3 s of pickling per write, several writes per PaymentIntent.
Its loader also rewrites that file while still reading it (unpickling a Store
calls Store.__setitem__, which dumps), so a store of more than ~1,000 objects
cannot be loaded again and is truncated on disk. And every list endpoint scans
the whole store: exporting one PaymentIntent lists its charge's refunds six times.

This launcher starts localstripe's own entry point (localstripe.server.start)
with these replaced first; the HTTP API is unchanged:

  Store.dump_to_disk        only marks the store changed; a forked child pickles a
                            copy-on-write snapshot at most once per --interval
                            (the server never stops to pickle), and a final write
                            happens at SIGTERM/SIGINT
  Store.try_load_from_disk  reads --store, writing nothing while it does
  Store.__setitem__/__delitem__  also keep an index of keys by object type
  StripeObject._api_list_all     reads that index instead of scanning the store

Every write goes to a temporary file beside the store, then os.replace: a kill -9
mid-write leaves the previous store whole. The pickle is localstripe's own format.
Each replaced function is compared with the 1.15.10 source at start; any
difference stops the launcher with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import inspect
import os
import pickle
import signal
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import AsyncIterator, Callable
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


# A write happens at most once per this many times its own duration.
WRITE_SPACING = 5.0


class StoreWriter:
    """Writes one store to a file at most once per interval, and only after a change.

    With fork (the default) a child process pickles a copy-on-write snapshot of
    the store while the server goes on answering. localstripe runs in one thread
    and the fork happens in a task of its event loop, so the snapshot falls
    between two steps of the loop, never inside an operation. Without fork, or
    at close, the write happens in this process.
    """

    def __init__(self, store: dict[str, Any], path: Path, *, interval: float = 1.0,
                 fork: bool = True,
                 dump: Callable[[object, BinaryIO], None] = pickle_dump) -> None:
        self.store = store
        self.path = path
        self.interval = interval
        self.fork = fork
        self.dump = dump
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
        try:
            atomic_dump(self.store, self.path, self.dump, temp=temp_path(self.path))
        except BaseException:
            self.dirty = True
            self.failures += 1
            raise
        self.writes += 1

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
        else:
            # Whatever it was writing is still to be written.
            self.dirty = True
            self.failures += 1
            temp_path(self.path).unlink(missing_ok=True)

    async def run(self) -> None:
        while True:
            self.tick(time.monotonic())
            await asyncio.sleep(self.next_tick(time.monotonic()))

    async def context(self, _app: object) -> AsyncIterator[None]:
        """An aiohttp cleanup_ctx: writes in the background while the app runs, and
        once more after it stopped answering (SIGTERM and SIGINT end run_app)."""
        task = asyncio.create_task(self.run())
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        done = "written" if self.close() else "unchanged since its last write"
        _log(f"store {done} at exit: {len(self.store)} objects in {self.path} "
             f"(writes since start: {self.writes})")


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
    """The attributes install() replaced, to put back (tests do)."""

    def __init__(self, writer: StoreWriter, index: TypeIndex) -> None:
        self.writer = writer
        self.index = index
        self.saved: list[tuple[type, str, object]] = []

    def replace(self, owner: type, name: str, value: object) -> None:
        self.saved.append((owner, name, vars(owner)[name]))
        setattr(owner, name, value)

    def original(self, owner: type, name: str) -> Any:
        return next(old for cls, attr, old in self.saved if cls is owner and attr == name)

    def undo(self) -> None:
        for owner, name, old in reversed(self.saved):
            setattr(owner, name, old)
        self.saved.clear()


def install(resources: ModuleType, path: Path, *, interval: float = 1.0,
            fork: bool = True) -> Patch:
    """Replaces localstripe's store writes, load and list scan (verify first)."""
    store_cls, live = resources.Store, resources.store
    writer = StoreWriter(live, path, interval=interval, fork=fork)
    index = TypeIndex()
    patch = Patch(writer, index)
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
            return
        except EOFError as err:
            # Named like the other truncations, so stackctl's recovery applies.
            raise pickle.UnpicklingError(f"{path} is truncated: {err}") from err
        self.clear()
        self.update(old)
        if self is live:
            index.rebuild(self)
            _log(f"loaded {len(self)} objects from {path} in {time.monotonic() - started:.1f}s")

    def setitem(self: dict[str, object], key: str, value: object) -> None:
        set_item(self, key, value)
        if self is live:
            index.add(key)

    def delitem(self: dict[str, object], key: str) -> None:
        del_item(self, key)
        if self is live:
            index.discard(key)

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
    patch.replace(resources.StripeObject, "_api_list_all", classmethod(api_list_all))
    index.rebuild(live)
    return patch


def _log(message: str) -> None:
    print(f"localstripe-launcher: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="localstripe_launcher.py",
        description="Start localstripe (its own server.start) with its store written "
        "at most once per --interval, atomically, and at exit; it loads stores of any "
        "size, and list endpoints no longer scan the whole store. Same HTTP API, same "
        "pickle format.",
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
                        help="at most one write per this many seconds (default 1)")
    return parser.parse_args(argv)


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
    server.app.cleanup_ctx.append(patch.writer.context)
    if args.from_scratch:
        # So a restart before any request does not bring the old store back.
        patch.writer.mark_dirty()
    # localstripe's own entry point, which reads --port and --from-scratch.
    sys.argv = [sys.argv[0], "--port", str(args.port)] + (
        ["--from-scratch"] if args.from_scratch else [])
    _log(f"localstripe {localstripe.__version__} on port {args.port}, store {store}, "
         f"written at most every {args.interval:g}s")
    server.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
