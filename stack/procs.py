"""What /proc says about a process: whether it is one of ours, and the leftovers of a kill -9."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def alive(pid: int | None) -> bool:
    """True for a process that exists and has not exited (a zombie has).

    A zombie leader whose other threads still run has not exited: a JVM whose
    main thread ended while its shutdown hooks run still holds its ports.
    """
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        # The state follows the parenthesised name, which may itself hold spaces.
        if (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            return True
        return len(os.listdir(PROC / str(pid) / "task")) > 1
    except (OSError, IndexError):
        return False


def argv(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def title(pid: int) -> str:
    """The command line as `ps` shows it; nginx, redis and Postgres children rewrite it."""
    return " ".join(argv(pid))


def has_env(pid: int, name: str, value: str) -> bool:
    """Whether the process was started with NAME=value (readable for our own uid or root)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{name}={value}".encode() in raw.split(b"\0")


def _link(pid: int, name: str) -> Path | None:
    try:
        return Path(os.readlink(PROC / str(pid) / name))
    except OSError:
        return None


def cwd(pid: int) -> Path | None:
    return _link(pid, "cwd")


def running_in(directory: Path, executable: Path) -> list[int]:
    """Live processes of `executable` whose working directory is `directory`.

    Every PostgreSQL server process works in its data directory, so this finds
    a cluster's processes whether or not its postmaster is still there.
    """
    directory, executable = directory.resolve(), executable.resolve()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if _link(pid, "exe") == executable and cwd(pid) == directory and alive(pid):
            found.append(pid)
    return sorted(found)


def end(pids: Iterable[int], *, first: signal.Signals = signal.SIGTERM,
        timeout: float = 10.0) -> list[int]:
    """Sends `first`, then SIGKILL to whatever is left after `timeout`; returns who got SIGKILL."""
    pending = [pid for pid in pids if alive(pid)]
    for pid in pending:
        try:
            os.kill(pid, first)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pending):
        time.sleep(0.1)
    stubborn = [pid for pid in pending if alive(pid)]
    for pid in stubborn:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return stubborn


def group_orphaned(pid: int) -> bool:
    """A forked process whose process-group leader (the process that forked it) is gone.

    `make up` starts every component as a group leader (or it daemonises into
    one, as nginx does), so its forked workers share its group; a worker whose
    leader died is a leftover of a kill -9, while a leader is never one.
    """
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return False
    return group != pid and not alive(group)


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # The local address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" \
                    and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listeners(port: int) -> list[int]:
    """Processes holding a socket that listens on `port` (needs root for other users' processes)."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return []
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(found)


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot: a reused pid has another one."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of stat; the split started at field 3
    except (OSError, IndexError, ValueError):
        return None
