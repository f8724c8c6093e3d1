"""How the launcher reports: one line on stderr, prefixed so it stands out in localstripe's log."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(f"localstripe-launcher: {message}", file=sys.stderr, flush=True)
