"""The errors the stack tooling raises on purpose:

    RuntimeError
     ├── StackError       a component did not start, stop or set up (make up prints it)
     └── LauncherError    the installed localstripe is not the one stack.localstripe patches
"""

from __future__ import annotations

from pathlib import Path


class StackError(RuntimeError):
    """A component did not start or stop; carries its name and the tail of its log."""

    def __init__(self, component: str, message: str, *, log: Path | None = None) -> None:
        tail = ""
        if log is not None and log.exists():
            lines = log.read_text(errors="replace").splitlines()[-25:]
            tail = "\n".join("    " + line for line in lines)
        where = f"\n  last lines of {log}:\n{tail}" if tail else ""
        super().__init__(f"{component}: {message}{where}")
        self.component = component


class LauncherError(RuntimeError):
    """The installed localstripe is not the one the launcher was written for."""
