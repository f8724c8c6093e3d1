"""The `paystream` command: each package adds its own subcommands.

`api.cli` adds `api` and `merchant`; `streams.cli` adds `worker` and `dlq`;
`streams.ops.books_cli` adds `reconcile` and `ledger`; `streams.ops.trace.cli` adds `trace`.
Imports are lazy so `paystream --help` stays fast and a broken extra does not
take the others down.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules with a `register(subparsers)` that adds their subcommands; each
# subcommand sets `func(args) -> int` through `set_defaults`.
COMMAND_MODULES = ("api.cli", "streams.cli", "streams.ops.books_cli", "streams.ops.trace.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paystream",
        description="PayStream: a CDC payment pipeline (API, stream workers, operations).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
