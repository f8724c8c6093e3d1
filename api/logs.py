"""Warnings that would repeat on every request during an outage, logged at most every N s."""

from __future__ import annotations

import logging
import time

_last: dict[str, float] = {}


def warn_throttled(logger: logging.Logger, key: str, message: str, *args: object,
                   every_seconds: float = 10.0) -> None:
    """Log a warning unless the same key was logged less than every_seconds ago.

    Metrics count every occurrence; the log only has to say that it is happening.
    """
    now = time.monotonic()
    if now - _last.get(key, -every_seconds) >= every_seconds:
        _last[key] = now
        logger.warning(message, *args)
