"""Shared fixtures: the stack's settings, a poll-until-true helper (no bare sleeps), a free port."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from paystream.settings import Settings

T = TypeVar("T")


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Endpoints of the running stack (`make test` exports them from `make env`)."""
    return Settings.from_env()


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0,
                     interval: float = 0.1, what: str = "condition") -> T:
    """Polls `check` until it returns something truthy, or fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last: {last!r})")


def wait_until(check: Callable[[], T | None], *, timeout: float = 30.0,
               interval: float = 0.1, what: str = "condition") -> T:
    """The synchronous twin of `eventually`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last: {last!r})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "disruptive: stops or restarts parts of the stack; runs after the rest")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that stop components go last, so a slow recovery cannot upset the others.
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
