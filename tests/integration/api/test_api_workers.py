"""`paystream api --workers N`: processes share the port, /metrics sums them, one
signal stops them all, and a worker dying takes the service down visibly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.ports import free_port
from testkit.waiting import wait_until

PAYSTREAM = Path(sys.executable).parent / "paystream"
CREATED = re.compile(
    r'^paystream_api_requests_total\{method="POST",route="/v1/payments",status="201"\} (\S+)$',
    re.MULTILINE)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False)
    return {int(p) for p in out.stdout.split()}


@pytest.fixture(name="served")
def served_fixture() -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    proc = subprocess.Popen([str(PAYSTREAM), "api", "--workers", "2", "--port", str(port)],
                            env={**os.environ, "RATE_LIMIT_PER_SECOND": "100000"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: len(children(proc.pid)) == 2 and get(f"{url}/health")[0] == 200,
                   timeout=30, what="two API workers answering")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def create(url: str, key: str) -> int:
    body = json.dumps({"amount": 500, "currency": "usd", "customer": "cus_workers",
                       "payment_method": "pm_card_visa"}).encode()
    request = urllib.request.Request(f"{url}/v1/payments", data=body, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status


def test_workers_share_the_port_sum_their_metrics_and_stop_together(
    served: tuple[subprocess.Popen[str], str]
) -> None:
    proc, url = served
    made = subprocess.run([str(PAYSTREAM), "merchant", "create", "Workers Shop"],
                          capture_output=True, text=True, check=True)
    key = json.loads(made.stdout)["api_key"]
    # A new connection per request: the kernel spreads them over both workers.
    assert [create(url, key) for _ in range(20)] == [201] * 20

    # Whichever worker answers /metrics, it counts every worker's requests.
    for _ in range(6):
        status, text = get(f"{url}/metrics")
        assert status == 200
        match = CREATED.search(text)
        assert match is not None and float(match.group(1)) == 20.0

    workers = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_dying_stops_the_service_with_an_error(
    served: tuple[subprocess.Popen[str], str]
) -> None:
    proc, url = served
    victim, survivor = sorted(children(proc.pid))
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=30) == 1
    assert not Path(f"/proc/{survivor}").exists()
    assert "stopping the others" in (proc.stderr.read() if proc.stderr else "")
    assert get(f"{url}/health")[0] == 0
