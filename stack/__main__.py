"""python3 -m stack ACTION: starts, stops and reports the local PayStream stack, one process
per component.

  up [NAME...]    start what is not running (all by default), wait until each is healthy
                  (repairing CDC if needed), print addresses
  down            stop every process `up` started (by pid), keeping the data
  start NAME      start one component (and nothing else)
  stop NAME       stop one component
  status          one line per component with why it is unhealthy; exit 0 only when all are
                  healthy (replicas stream, CDC streams and advances)
  env             `export NAME=value` lines for every endpoint
  clean           down, then remove all data under the stack folder
  watchdog        check CDC every 10 s and repair it, start again a worker that exited
                  without `stop` (`up` runs this as a component)

A kill -9 leaves things behind that `up` cleans before starting again: a pid
file whose process is gone or is no longer ours (checked in /proc), forked
workers still listening on the port, a killed postmaster's orphaned backends.

Every port comes from the environment (PG_PORT, PG_REPLICA1_PORT, ...; see
stack/config.py). Data, logs and pid files live under PAYSTREAM_STACK_DIR (.stack/).
Standard library only, so it runs with the system python3.
"""


from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from stack import commands
from stack.config import Config

# The actions that take component names; start and stop are up and down for the few named.
WITH_NAMES: dict[str, Callable[[Config, list[str]], int]] = {
    "up": commands.up, "start": commands.up, "down": commands.down, "stop": commands.down,
}
WITHOUT_NAMES: dict[str, Callable[[Config], int]] = {
    "status": commands.status, "env": commands.print_env, "clean": commands.clean,
    "json": commands.print_json, "watchdog": commands.run_watchdog,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=[*WITH_NAMES, *WITHOUT_NAMES])
    parser.add_argument("names", nargs="*", help="component names (default: all)")
    args = parser.parse_args(argv)
    cfg = Config()
    if args.action in WITH_NAMES:
        return WITH_NAMES[args.action](cfg, args.names)
    return WITHOUT_NAMES[args.action](cfg)


if __name__ == "__main__":
    sys.exit(main())
