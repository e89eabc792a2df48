"""The arbiter benchmark runs end to end on tiny sizes and reports every figure.

Only the shape of the result is checked: timings belong to `make bench`, not to tests.
"""

from __future__ import annotations

import math

from bench import scheduler as scheduler_bench
from bench.registry import BENCHMARKS

FIGURES = {
    "sched_decisions_per_s_1k",
    "sched_decisions_per_s_10k",
    "sched_decisions_per_s_100k",
    "sched_slowdown_100k_vs_1k",
}


def test_smoke_run_reports_every_figure_as_a_positive_finite_number() -> None:
    figures = scheduler_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value) and value > 0, (name, value)


def test_every_goal_names_a_figure_the_benchmark_reports() -> None:
    assert scheduler_bench in BENCHMARKS
    assert {goal.figure for goal in scheduler_bench.GOALS} <= FIGURES
