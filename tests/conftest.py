"""What every tier shares: the stack's settings, a stack Config on a folder of the test's own,
the markers and the order (disruptive tests last). Helpers live in testkit/, not here."""

from __future__ import annotations

from pathlib import Path

import pytest

from paystream.settings import Settings
from stack.config import Config


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Endpoints of the running stack (`make test` exports them from `make env`)."""
    return Settings.from_env()


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The stack's Config on a stack folder of the test's own (PAYSTREAM_STACK_DIR)."""
    monkeypatch.setenv("PAYSTREAM_STACK_DIR", str(tmp_path / "stack"))
    return Config()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "disruptive: stops or restarts parts of the stack; runs after the rest")
    config.addinivalue_line(
        "markers", "own_database: the module's `settings` name a database of its own "
        "(testkit/own_books.py), dropped with the module")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that stop components go last, so a slow recovery cannot upset the others.
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
