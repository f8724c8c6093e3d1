"""A TCP port nothing listens on right now, for servers started by tests and benchmarks."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS picked; free when asked, so a server should take it at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
