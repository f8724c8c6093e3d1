"""bench/cpu.py: CPU of process trees from /proc, and the per-item arithmetic."""

from __future__ import annotations

from bench import cpu


def test_per_item_ms_divides_the_delta_and_totals() -> None:
    costs = cpu.per_item_ms({"pg": 1.0, "kafka": 2.0}, {"pg": 1.5, "kafka": 2.1}, 100)
    assert costs == {"pg": 5.0, "kafka": 1.0, "total": 6.0}


def test_per_item_ms_takes_the_idle_share_off_and_never_goes_negative() -> None:
    costs = cpu.per_item_ms({"pg": 0.0, "kafka": 0.0}, {"pg": 1.0, "kafka": 0.1}, 10,
                            elapsed=2.0, idle={"pg": 0.25, "kafka": 0.5})
    # pg: (1.0 - 0.25 * 2) / 10 s; kafka idled more than it spent: 0, not negative.
    assert costs == {"pg": 50.0, "kafka": 0.0, "total": 50.0}


def test_line_lists_the_non_zero_costs() -> None:
    assert cpu.line({"pg": 5.0, "redis": 0.0, "total": 5.0}) == "pg 5.0  total 5.0"
