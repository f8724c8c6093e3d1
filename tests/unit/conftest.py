"""The unit tier's fixtures: localstripe's store patched by the launcher, in memory."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.localstripe.patch import install

with warnings.catch_warnings():
    # localstripe's server registers plain functions as handlers, which aiohttp deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import resources


@pytest.fixture
def patched(tmp_path: Path) -> Iterator[Any]:
    """localstripe's store, empty, with the launcher's patch (writes to tmp_path only)."""
    dict.clear(resources.store)
    patch = install(resources, tmp_path / "s.pickle", fork=False)
    try:
        yield patch
    finally:
        dict.clear(resources.store)
        patch.undo()
