"""What the launcher replaces in localstripe (install) and puts back (Patch.undo): store writes
and load, the change tracking, the list scan through an index of keys by type."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from stack.localstripe.changelog import ChangeLog
from stack.localstripe.checkpoint import StoreWriter
from stack.localstripe.group_commit import Changes
from stack.localstripe.report import say


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
        say(f"store {done} at exit: {len(self.writer.store)} objects in {self.writer.path} "
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
            # Named like the other truncations, so LocalStripe.start's recovery applies.
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
        say(f"loaded {loaded} objects from {path} and {replayed} commits from its log "
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
