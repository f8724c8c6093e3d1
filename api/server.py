"""Run the API: one process, or several sharing the port (SO_REUSEPORT) under a parent.

The parent forks the workers before any event loop exists, forwards SIGTERM and
SIGINT to them, and exits when they all have; if one dies on its own the parent
stops the rest and exits non-zero, so whatever supervises it (`python3 -m stack`, compose)
sees one failed service rather than a silently smaller one.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from types import FrameType

from paystream.settings import Settings

log = logging.getLogger("api")

# prometheus-client's multiprocess mode: each worker writes its samples to files
# here and /metrics sums them, whichever worker answers.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def run_one(settings: Settings, host: str, port: int, *, access_log: bool,
            reuse_port: bool = False) -> None:
    import uvloop
    from aiohttp import web

    from api.app import create_app

    # run_app turns SIGINT and SIGTERM into a graceful shutdown: it stops
    # accepting, lets in-flight requests finish, then runs cleanup_ctx.
    web.run_app(
        create_app(settings),
        host=host,
        port=port,
        reuse_port=reuse_port,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        shutdown_timeout=10.0,
        print=lambda _: log.info("serving on http://%s:%s (pid %d)", host, port, os.getpid()),
        loop=uvloop.new_event_loop(),
    )


def run_many(settings: Settings, host: str, port: int, workers: int, *,
             access_log: bool) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="paystream-api-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    children: set[int] = set()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run_one(settings, host, port, access_log=access_log, reuse_port=True)
            except BaseException:  # the child must never return into the parent's code
                log.exception("API worker failed")
                code = 1
            finally:
                os._exit(code)
        children.add(pid)
    log.info("%d API workers on http://%s:%s", workers, host, port)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    try:
        while children:
            pid, code = os.wait()
            children.discard(pid)
            exit_code = os.waitstatus_to_exitcode(code)
            if exit_code != 0 and status == 0:
                log.error("API worker %d exited with %d; stopping the others", pid, exit_code)
                status = 1
                forward(signal.SIGTERM, None)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


def serve(settings: Settings, host: str, port: int, *, workers: int, access_log: bool) -> int:
    if workers == 1:
        run_one(settings, host, port, access_log=access_log)
        return 0
    sys.stdout.flush()
    return run_many(settings, host, port, workers, access_log=access_log)
