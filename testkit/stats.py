"""The one percentile every benchmark reports with."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """The value at quantile q (0..1) of values, nearest rank; NaN for none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
