"""What the benchmark scripts share: the common command line and result printing."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any


def parser(doc: str, epilog: str) -> argparse.ArgumentParser:
    """A benchmark's parser, described by the first paragraph of its module docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=epilog)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv after adding --json, last so that --help lists it after the bench's own."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def show(result: Mapping[str, Any], *, as_json: bool) -> None:
    """Print the result as one JSON object, or as `key  value` lines aligned on the keys."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
