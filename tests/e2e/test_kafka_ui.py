"""The Kafka UI in the terminal (stack/kafka-ui, kaskade) in tmux, read off its screen."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "stack" / "kafka-ui"
KASKADE = ROOT / ".cache" / "kaskade-venv" / "bin" / "kaskade"
PAYMENTS = "paystream.public.payments"
CDC_TOPICS = (PAYMENTS, "paystream.public.refunds")

pytestmark = pytest.mark.skipif(not KASKADE.exists(),
                                reason=f"kaskade is not installed ({KASKADE}): run make install")


class Terminal:
    """A 200x50 terminal in a tmux server of its own, so a person's tmux is never touched."""

    def __init__(self, folder: Path) -> None:
        # The socket in the test's own folder: kill-server leaves the file behind.
        self.socket = folder / "tmux.sock"
        self.conf = folder / "tmux.conf"
        # remain-on-exit keeps the pane of a crashed UI on screen for the failure message.
        self.conf.write_text("set-option -g remain-on-exit on\n")

    def tmux(self, *args: str) -> str:
        # The first call starts the server, whose environment the UI inherits: pytest's
        # COLUMNS=80 and LINES=24 would shrink textual's screen to 80x24 inside 200x50.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(["tmux", "-S", str(self.socket), "-f", str(self.conf), *args],
                              capture_output=True, text=True, timeout=10, check=True,
                              env=env).stdout

    def run(self, *command: str) -> None:
        self.tmux("new-session", "-d", "-s", "ui", "-x", "200", "-y", "50", shlex.join(command))

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "ui")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "ui", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "ui", "-l", text)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True,
                       timeout=10)


@pytest.fixture(name="terminal")
def terminal_fixture(tmp_path: Path) -> Iterator[Terminal]:
    terminal = Terminal(tmp_path)
    try:
        yield terminal
    finally:
        terminal.close()


def wait_for_screen(terminal: Terminal, shows: Callable[[str], bool], *, what: str,
                    timeout: float = 20.0) -> str:
    """Polls the screen until `shows` accepts it; a failure prints the last screen."""
    last = ""

    def check() -> str | None:
        nonlocal last
        last = terminal.screen()
        return last if shows(last) else None

    try:
        return str(wait_until(check, timeout=timeout, interval=0.25, what=what))
    except AssertionError as exc:
        raise AssertionError(f"{what} not on screen within {timeout:.0f}s:\n{last}") from exc


def kcat(*args: str) -> str:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    return subprocess.run(["kcat", "-b", bootstrap, *args], capture_output=True, text=True,
                          timeout=15, check=True).stdout


def end_offsets(topic: str) -> dict[int, int]:
    """The next offset of every partition, through kcat (as README shows it)."""
    meta = json.loads(kcat("-L", "-J", "-t", topic))
    partitions = [p["partition"] for t in meta["topics"] for p in t["partitions"]]
    assert partitions, meta
    out = kcat("-Q", *[arg for p in partitions for arg in ("-t", f"{topic}:{p}:-1")])
    offsets = {int(p): int(o) for p, o in re.findall(r"\[(\d+)\] offset (-?\d+)", out)}
    assert sorted(offsets) == sorted(partitions), out
    return offsets


def find_record(topic: str, start: dict[int, int], key_part: str) -> tuple[int, int] | None:
    """(partition, offset) of the first record past `start` whose key holds `key_part`."""
    for partition, offset in start.items():
        out = kcat("-C", "-t", topic, "-p", str(partition), "-o", str(offset), "-e", "-q",
                   "-f", "%o %k\n")
        for line in out.splitlines():
            found, _, key = line.partition(" ")
            if key_part in key:
                return partition, int(found)
    return None


def create_payment() -> str:
    """One payment through the API with the demo merchant's key, as README's curl does."""
    stack_dir = Path(os.environ.get("PAYSTREAM_STACK_DIR", ROOT / ".stack"))
    key = json.loads((stack_dir / "demo-merchant.json").read_text())["api_key"]
    body = {"amount": 2500, "currency": "usd", "customer": f"kafka-ui-{uuid.uuid4().hex[:8]}",
            "payment_method": "pm_card_visa", "description": "seen in the Kafka UI"}
    request = urllib.request.Request(
        f"{os.environ['API_URL']}/v1/payments", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                 "Idempotency-Key": f"kafka-ui-{uuid.uuid4()}"})
    with urllib.request.urlopen(request, timeout=15) as response:
        created = json.loads(response.read())
    assert created["status"] == "pending", created
    return str(created["id"])


def test_admin_view_lists_the_cdc_topics(terminal: Terminal) -> None:
    terminal.run(str(LAUNCHER))
    screen = wait_for_screen(terminal, lambda s: "Topics [" in s and "paystream" in s,
                             what="the topic list of the admin view")
    # The broker the launcher found, in kaskade's title bar (the first of a list: ha).
    assert os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092").split(",")[0] in screen
    # Filtered as a person would: benchmarks add topics enough to push these off screen.
    terminal.keys("/")
    wait_for_screen(terminal, lambda s: "Filter Topics" in s, what="the topic filter")
    terminal.type("paystream.public")
    # Enter is a priority binding: it overtakes keys the input has not drawn yet.
    wait_for_screen(terminal, lambda s: "│ paystream.public " in s, what="the typed filter")
    terminal.keys("Enter")
    wait_for_screen(terminal, lambda s: "Topics [*paystream.public*][2]" in s
                    and all(t in s for t in CDC_TOPICS), what="the two CDC topics")


def test_consumer_view_shows_a_new_payment(terminal: Terminal) -> None:
    start = end_offsets(PAYMENTS)
    payment_id = create_payment()
    # The view opens at the payment's change event: a benchmark running beside the test
    # puts many records a second between the old end and it, more than paging
    # 25 at a time (n) can walk through.
    partition, offset = wait_until(
        lambda: find_record(PAYMENTS, start, payment_id), timeout=30, interval=0.5,
        what=f"payment {payment_id} in {PAYMENTS} (is the CDC connector running?)")
    terminal.run(str(LAUNCHER), PAYMENTS, "--partition", f"{partition}:{offset}")
    screen = wait_for_screen(terminal, lambda s: payment_id in s,
                             what=f"payment {payment_id} in the consumer view")
    assert f"Records [{PAYMENTS}]" in screen
    # Keys and values decoded as JSON: Debezium's envelope, with the row under "after".
    assert f"{{'id': '{payment_id}'}}" in screen
    assert "'after': {'id': '" + payment_id in screen
