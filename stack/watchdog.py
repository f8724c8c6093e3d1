"""The watchdog as a component (its loop is stack/cdc_watchdog.py), and its check that starts
again a worker that exited without being stopped."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from stack import cdc_watchdog
from stack.component import Component


class Watchdog(Component):
    """The CDC watchdog (stack/cdc_watchdog.py), a process of its own like the others; it
    also starts again a worker that exited without being stopped (restart_if_exited)."""

    @property
    def state_file(self) -> Path:
        return self.cfg.run / "watchdog.json"

    def address(self) -> str:
        return f"every {cdc_watchdog.INTERVAL_S:.0f}s"

    def command(self) -> list[str]:
        # Run from the checkout (launch() runs it in ROOT), which holds the stack package.
        return [sys.executable, "-m", "stack", "watchdog"]

    def ready(self) -> bool:
        # Its state file is rewritten every round; one that stopped changing is a stuck watchdog.
        return cdc_watchdog.fresh(self.state_file, 3 * cdc_watchdog.INTERVAL_S, pid=self.pid())


def restart_if_exited(comp: Component, *, confirm_after: float = 2.0,
                      ) -> Callable[[bool], list[str]]:
    """A watchdog check that starts `comp` again when it exited without being stopped.

    `stop` removes the pid file, so a component stopped on purpose (`python3 -m stack
    stop worker`, as benches and tests do) stays stopped; a pid file whose process is
    gone means it crashed, was killed, or ended itself to be restarted (the worker
    past a deadline or its stall watchdog). Seen twice, `confirm_after` apart: a
    stop in progress removes its pid file right after the process exits. Not while
    Kafka is down: the worker would only exit again.
    """
    def check(kafka_up: bool) -> list[str]:
        gone = comp.recorded_pid()
        if gone is None or comp.pid() is not None or not kafka_up:
            return []
        time.sleep(confirm_after)
        if comp.recorded_pid() != gone or comp.pid() is not None:
            return []
        comp.clear_stale()
        comp.launch()
        return [f"{comp.name}: pid {gone} had exited without a stop; started again "
                f"(pid {comp.launched})"]
    return check
