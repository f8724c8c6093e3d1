"""A launcher-run localstripe killed with SIGKILL right after an answer keeps every answer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import stripe

from testkit.ports import free_port
from testkit.waiting import eventually

ROOT = Path(__file__).resolve().parents[3]
# Run in ROOT, the checkout that holds the stack package.
LAUNCHER = [sys.executable, "-m", "stack.localstripe"]
API_KEY = "sk_test_durable"
IN_FLIGHT = 20  # creates under way when the server is killed
PER_RUN = 40  # answers before each kill


class Peer:
    """One launcher process on a store of the test's own, in a session of its own
    (a kill reaches its checkpoint writer child too)."""

    def __init__(self, store: Path, port: int, *args: str) -> None:
        self.port = port
        self.log = store.with_name(f"launcher-{port}.log")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*LAUNCHER, "--port", str(port), "--store", str(store),
                 *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=ROOT)
        http = stripe.AIOHTTPClient(timeout=30)
        self.client = stripe.StripeClient(
            API_KEY, base_addresses={"api": f"http://127.0.0.1:{port}"}, http_client=http,
            max_network_retries=0)
        self._http = http

    async def ready(self) -> None:
        async def answers() -> bool:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                await self.client.v1.customers.list_async()
            except stripe.APIConnectionError:
                return False
            return True

        await eventually(answers, timeout=60, interval=0.05, what=f"localstripe on {self.port}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    async def close(self) -> None:
        self.kill()
        await self._http.close_async()  # type: ignore[no-untyped-call]


async def create_until_killed(peer: Peer, answered: list[str], kill_after: int) -> None:
    """Creates and confirms PaymentIntents; the one that brings the answers to
    kill_after kills the server before anything else runs."""
    while peer.proc.poll() is None:
        try:
            intent = await peer.client.v1.payment_intents.create_async(params={
                "amount": 1000 + len(answered), "currency": "usd",
                "payment_method": "pm_card_visa", "confirm": True})
        except stripe.APIConnectionError:
            return  # killed while this one was under way: never answered
        assert intent.status == "succeeded", intent
        answered.append(intent.id)
        if len(answered) >= kill_after:
            peer.kill()
            return


async def test_every_answered_payment_intent_survives_kill_9(tmp_path: Path) -> None:
    store = tmp_path / "stripe.pickle"
    port = free_port()
    answered: list[str] = []
    # The first runs never checkpoint (everything comes back from the log); the
    # later ones checkpoint every 50 ms, so kills also land around checkpoints.
    for run, interval in enumerate(["600", "600", "0.05", "0.05", "0.05"]):
        peer = Peer(store, port, "--interval", interval)
        try:
            await peer.ready()
            await check_all_there(peer, answered)
            kill_after = len(answered) + PER_RUN
            await asyncio.gather(*(create_until_killed(peer, answered, kill_after)
                                   for _ in range(IN_FLIGHT)))
            assert peer.proc.returncode == -signal.SIGKILL, run
        finally:
            await peer.close()

    peer = Peer(store, port)
    try:
        await peer.ready()
        await check_all_there(peer, answered)
    finally:
        await peer.close()
    assert len(answered) >= 5 * PER_RUN
    output = peer.log.read_text(errors="replace")
    assert "commits from its log" in output, output[-3000:]


async def check_all_there(peer: Peer, answered: list[str]) -> None:
    missing = []
    for intent_id in answered:
        try:
            intent = await peer.client.v1.payment_intents.retrieve_async(intent_id)
        except stripe.InvalidRequestError:
            missing.append(intent_id)
            continue
        assert (intent.id, intent.status) == (intent_id, "succeeded")
    assert not missing, f"{len(missing)} of {len(answered)} answered PaymentIntents are gone"


async def test_the_log_is_folded_into_the_store_at_sigterm(tmp_path: Path) -> None:
    store = tmp_path / "stripe.pickle"
    peer = Peer(store, free_port(), "--interval", "600")
    try:
        await peer.ready()
        intent = await peer.client.v1.payment_intents.create_async(params={
            "amount": 2500, "currency": "usd", "payment_method": "pm_card_visa",
            "confirm": True})
        assert [path.name for path in tmp_path.glob("stripe.pickle.log.*")] == \
            ["stripe.pickle.log.00000001"]
        os.killpg(peer.proc.pid, signal.SIGTERM)
        assert await asyncio.to_thread(peer.proc.wait, 30) == 0
    finally:
        await peer.close()
    assert list(tmp_path.glob("stripe.pickle.log.*")) == []
    assert intent.id.encode() in store.read_bytes()
