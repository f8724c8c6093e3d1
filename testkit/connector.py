"""A Debezium connector seen through Kafka Connect's REST API: its states, paused for a while.

Tests pause the stack's connector so that the stack's worker leaves their
payments alone; benchmarks pause it so that one logical decoder runs while they
measure (their own feed's). Either way the changes wait in the replication
slot and stream once it is resumed. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

from testkit.waiting import wait_until

# connectors/payments.json, under the name connectors/register.py gives it.
STACK_CONNECTOR = "paystream-payments"


def connect_url() -> str | None:
    """CONNECT_URL of the stack's environment; None without it (nothing to pause)."""
    url = os.environ.get("CONNECT_URL")
    return url.rstrip("/") if url else None


def rest(url: str, method: str, path: str) -> tuple[int, Any]:
    """(status, JSON body or None) of one call; HTTP errors are answers, not exceptions."""
    # Connect answers a PUT without a JSON content type 415.
    request = urllib.request.Request(url.rstrip("/") + path, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        return err.code, None


def states(url: str, name: str = STACK_CONNECTOR) -> list[str]:
    """The connector's state then each task's (RUNNING, PAUSED...); [] when it is unknown."""
    code, body = rest(url, "GET", f"/connectors/{name}/status")
    if code != 200 or not isinstance(body, dict):
        return []
    return [body["connector"]["state"], *(task["state"] for task in body.get("tasks", []))]


def pause(url: str, name: str = STACK_CONNECTOR) -> bool:
    return rest(url, "PUT", f"/connectors/{name}/pause")[0] in (200, 202)


def resume(url: str, name: str = STACK_CONNECTOR) -> bool:
    return rest(url, "PUT", f"/connectors/{name}/resume")[0] in (200, 202)


@contextlib.contextmanager
def paused(url: str | None, name: str = STACK_CONNECTOR, *,
           timeout: float = 30.0) -> Iterator[bool]:
    """`with paused(url) as did:` the connector and its tasks PAUSED for the block, when
    it was RUNNING; resumed after only if we paused it (did). Without url, nothing."""
    try:
        running = url is not None and states(url, name)[:1] == ["RUNNING"]
    except OSError:
        running = False
    if not running or url is None or not pause(url, name):
        yield False
        return
    try:
        wait_until(lambda: set(states(url, name)) == {"PAUSED"}, timeout=timeout,
                   interval=0.2, what=f"connector {name} paused")
        yield True
    finally:
        try:
            if not resume(url, name):
                raise OSError("Connect refused to resume it")
        except OSError as failure:
            print(f"could not resume {name} ({failure}): run make up", file=sys.stderr)


@contextlib.asynccontextmanager
async def paused_async(url: str | None, name: str = STACK_CONNECTOR, *,
                       timeout: float = 30.0) -> AsyncIterator[bool]:
    """`paused` for async code: Connect's calls run in a thread, off the event loop."""
    manager = paused(url, name, timeout=timeout)
    did = await asyncio.to_thread(manager.__enter__)
    try:
        yield did
    except BaseException as err:
        if not await asyncio.to_thread(manager.__exit__, type(err), err, err.__traceback__):
            raise
    else:
        await asyncio.to_thread(manager.__exit__, None, None, None)
