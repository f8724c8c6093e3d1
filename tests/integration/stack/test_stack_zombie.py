"""procs.alive on a real child: a leader whose threads still run is alive, a real zombie is not."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from stack import procs


def test_a_zombie_leader_whose_threads_still_run_is_alive_and_a_real_zombie_is_not() -> None:
    # A JVM whose main thread ended while its shutdown hooks run (restarting Connect):
    # its leader shows "Z" but it still holds its ports; stop() must wait for it.
    code = ("import ctypes, threading, time; threading.Thread(target=time.sleep, args=(30,))"
            ".start(); ctypes.CDLL(None).pthread_exit(None)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        stat = Path(f"/proc/{proc.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the main thread did not end"
            time.sleep(0.05)
        assert procs.alive(proc.pid)
        proc.kill()
        deadline = time.monotonic() + 10
        while len(list(Path(f"/proc/{proc.pid}/task").iterdir())) > 1:
            assert time.monotonic() < deadline, "the thread did not end"
            time.sleep(0.05)
        assert not procs.alive(proc.pid)  # exited, not reaped yet
    finally:
        proc.kill()
        proc.wait()
