"""testkit.ports: a port the OS says is free can be bound."""

from __future__ import annotations

import socket

from testkit.ports import free_port


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
