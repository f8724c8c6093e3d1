"""stack.localstripe (the launcher) as the stack runs it: Stripe state kept across a SIGTERM,
and a store that still loads after a kill -9 in the middle of a write.

Each test runs its own launcher on a free port and a store in its tmp_path; none
needs the stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from testkit.ports import free_port
from testkit.waiting import eventually, wait_until

ROOT = Path(__file__).resolve().parents[3]
# Run in ROOT, the checkout that holds the stack package.
LAUNCHER = [sys.executable, "-m", "stack.localstripe"]
AUTH = {"Authorization": "Bearer sk_test_launcher"}
PAYMENT_INTENT = {"amount": "2500", "currency": "usd", "payment_method": "pm_card_visa",
                  "confirm": "true"}


class Launcher:
    """One launcher process in a session of its own (a kill reaches its writer child)."""

    def __init__(self, store: Path, *args: str) -> None:
        self.store = store
        self.port = free_port()
        self.log = store.with_name(f"launcher-{self.port}.log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*LAUNCHER, "--port", str(self.port), "--store", str(store),
                 *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=ROOT)
        wait_until(self._ready, timeout=60, what=f"launcher on {self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            return self.call("GET", "/v1/customers")[0] == 200
        except OSError:
            return False

    def call(self, method: str, path: str,
             form: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=AUTH)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> float:
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.output()
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


def create_payment_intent(launcher: Launcher) -> dict[str, Any]:
    status, body = launcher.call("POST", "/v1/payment_intents", PAYMENT_INTENT)
    assert status == 200 and body["status"] == "succeeded", body
    return body


class PlainStore(pickle.Unpickler):
    """Reads a pickled localstripe Store as a dict: its own __setitem__ would write
    /tmp/localstripe.pickle while loading."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("localstripe.resources", "Store"):
            return dict
        return super().find_class(module, name)


def read_store(path: Path) -> dict[str, Any]:
    with open(path, "rb") as file:
        loaded: dict[str, Any] = PlainStore(file).load()
    return loaded


def test_help_names_the_options_and_the_localstripe_version() -> None:
    out = subprocess.run([*LAUNCHER, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    for word in ("--port", "--from-scratch", "--store", "--interval", "1.15.10"):
        assert word in out


def test_a_payment_intent_survives_sigterm_and_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "stripe.pickle"
    # No periodic write within the test: what survives is the write at exit.
    first = Launcher(store, "--interval", "600")
    try:
        created = create_payment_intent(first)
        assert first.terminate() < 10
    finally:
        first.kill()
    assert "store written at exit" in first.output()

    again = Launcher(store)
    try:
        status, body = again.call("GET", f"/v1/payment_intents/{created['id']}")
        assert status == 200, body
        assert (body["id"], body["amount"], body["currency"], body["status"]) == \
            (created["id"], 2500, "usd", "succeeded")
        status, listed = again.call("GET", "/v1/payment_intents?limit=100")
        assert [pi["id"] for pi in listed["data"]] == [created["id"]]
    finally:
        again.kill()

    fresh = Launcher(store, "--from-scratch")
    try:
        assert fresh.call("GET", f"/v1/payment_intents/{created['id']}")[0] == 404
    finally:
        fresh.kill()


async def _load(url: str, stop: asyncio.Event) -> int:
    """Creates PaymentIntents until stop is set or the server goes away."""
    made = 0
    async with aiohttp.ClientSession(headers=AUTH) as http:
        while not stop.is_set():
            try:
                async with http.post(f"{url}/v1/payment_intents", data=PAYMENT_INTENT) as resp:
                    made += resp.status == 200
            except aiohttp.ClientError:
                return made
    return made


async def _kill_while_writing(store: Path) -> tuple[dict[str, Any], Path]:
    """Starts a launcher writing every 20 ms while 4 clients add to its store, and
    kill -9s it (writer child included) once a write is under way. Returns a
    PaymentIntent written before, and the interrupted write's temporary file."""
    running = Launcher(store, "--interval", "0.02")
    temp = store.with_name(f".{store.name}.{running.proc.pid}.tmp")
    kept = create_payment_intent(running)
    written = store.stat().st_ino if store.exists() else None

    async def rewritten() -> bool:
        return store.exists() and store.stat().st_ino != written

    async def mid_write() -> bool:
        if temp.exists():
            running.kill()
            return True
        return False

    await eventually(rewritten, timeout=30, what="a write after the PaymentIntent")
    stop = asyncio.Event()
    clients = [asyncio.create_task(_load(running.url, stop)) for _ in range(4)]
    try:
        await eventually(lambda: _objects_at_least(running, 2000), timeout=120, interval=0.5,
                         what="a store of 2,000 objects")
        await eventually(mid_write, timeout=30, interval=0.001, what="a write under way")
    finally:
        stop.set()
        running.kill()
        await asyncio.gather(*clients)
    return kept, temp


async def test_kill_9_in_the_middle_of_a_write_leaves_a_store_that_loads(tmp_path: Path) -> None:
    store = tmp_path / "stripe.pickle"
    for _ in range(5):
        kept, temp = await _kill_while_writing(store)
        if temp.exists():
            break  # killed before the rename: the interrupted write is still there
    else:
        raise AssertionError("five kills all landed between writes")

    loaded = read_store(store)
    assert f"payment_intent:{kept['id']}" in loaded

    again = Launcher(store)
    try:
        status, body = again.call("GET", f"/v1/payment_intents/{kept['id']}")
        assert status == 200 and body["status"] == "succeeded", body
    finally:
        again.kill()
    assert not temp.exists(), "the restarted launcher sweeps the interrupted write"
    assert "left by a launcher killed while writing" in again.output()


async def _objects_at_least(launcher: Launcher, count: int) -> bool:
    # Each confirmed PaymentIntent leaves 7 objects (charge, balance transaction,
    # event, three payment methods); total_count needs no store file.
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(f"{launcher.url}/v1/payment_intents?limit=1") as resp:
            listed = await resp.json()
    return 7 * int(listed.get("total_count", 0)) >= count
