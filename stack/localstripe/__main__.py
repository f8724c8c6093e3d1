"""python -m stack.localstripe: localstripe's own server, patched as stack/localstripe/ says."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stack.errors import LauncherError
from stack.localstripe.compat import DEFAULT_STORE, WRITTEN_FOR, verify
from stack.localstripe.files import sweep_temp_files
from stack.localstripe.patch import install
from stack.localstripe.report import say


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stack.localstripe",
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
        say(str(err))
        return 2
    store = args.store.resolve()
    for stale in sweep_temp_files(store):
        say(f"removed {stale}, left by a launcher killed while writing")
    patch = install(resources, store, interval=args.interval)
    patch.from_scratch = args.from_scratch
    try:
        replace_middleware(server.app, server.save_store_middleware, patch.middleware)
    except LauncherError as err:
        say(str(err))
        return 2
    server.app.cleanup_ctx.append(patch.context)
    if args.from_scratch:
        # So the first checkpoint replaces the old store.
        patch.writer.mark_dirty()
    # localstripe's own entry point, which reads --port and --from-scratch.
    sys.argv = [sys.argv[0], "--port", str(args.port)] + (
        ["--from-scratch"] if args.from_scratch else [])
    say(f"localstripe {localstripe.__version__} on port {args.port}, store {store}, "
         f"each change logged before its answer, checkpoints at most every "
         f"{args.interval:g}s")
    server.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
