"""What the console's Prometheus proxy may run: exactly the PromQL of its panels, nothing else.

The allow-list is read from the panels the page draws (api/console/panels.json),
so a panel added there is allowed at the next start and a query typed into the
proxy by hand is not: an arbitrary PromQL can read every series Prometheus holds
and keep it busy for as long as it likes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PANELS = Path(__file__).with_name("console") / "panels.json"
# The page asks for 15 minutes; a day leaves room to widen it without letting a
# crafted range make an allowed query scan months.
MAX_RANGE_SECONDS = 24 * 3600.0
# Prometheus refuses more points than this per series anyway; refusing here saves it the parse.
MAX_POINTS = 11_000


class QueryRefused(ValueError):
    """A proxied request the console would never make; the message says why."""


def panel_queries(config: Mapping[str, Any]) -> frozenset[str]:
    """Every PromQL expression in a panels.json document: its stats' and its charts'."""
    stats = {stat["expr"] for stat in config.get("stats", [])}
    charts = {query["expr"] for panel in config.get("panels", []) for query in panel["queries"]}
    return frozenset(stats | charts)


def load_allowed(path: Path = PANELS) -> frozenset[str]:
    return panel_queries(json.loads(path.read_text()))


def _number(params: Mapping[str, str], name: str) -> float:
    try:
        value = float(params[name])
    except KeyError:
        raise QueryRefused(f"{name} is required") from None
    except ValueError:
        raise QueryRefused(f"{name} must be a Unix timestamp or a number of seconds") from None
    if not math.isfinite(value):
        raise QueryRefused(f"{name} must be finite")
    return value


def checked_params(endpoint: str, params: Mapping[str, str],
                   allowed: frozenset[str]) -> dict[str, str]:
    """The parameters to forward for one proxied request, or QueryRefused.

    Only the parameters the page sends are forwarded; anything else a caller adds
    (``timeout``, ``limit``, ``lookback_delta``...) is dropped.
    """
    if endpoint == "alerts":
        return {}
    query = params.get("query", "")
    if query not in allowed:
        raise QueryRefused("this query is not one of the console's panels "
                           "(api/console/panels.json); the proxy runs no other")
    if endpoint == "query":
        forwarded = {"query": query}
        if "time" in params:
            _number(params, "time")
            forwarded["time"] = params["time"]
        return forwarded
    start, end, step = (_number(params, name) for name in ("start", "end", "step"))
    if step <= 0 or end < start:
        raise QueryRefused("the range must have start <= end and a positive step")
    if end - start > MAX_RANGE_SECONDS:
        raise QueryRefused(f"the range is longer than {MAX_RANGE_SECONDS / 3600:g} hours")
    if (end - start) / step > MAX_POINTS:
        raise QueryRefused(f"the range has more than {MAX_POINTS} steps")
    return {"query": query, "start": params["start"], "end": params["end"],
            "step": params["step"]}
