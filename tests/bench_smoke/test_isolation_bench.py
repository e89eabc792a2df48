"""The isolation benchmark runs end to end (a real server serving Predict, a real
training task beside it, under each OpenMP wait policy) on a handful of calls and
reports every figure.

Only the shape of the result is checked: timings belong to `make bench`, not to tests.
"""

from __future__ import annotations

import math

from bench import isolation as isolation_bench
from bench.registry import BENCHMARKS
from server.config import OMP_WAIT_POLICIES

FIGURES = {
    "isolation_idle_p50_ms",
    "isolation_idle_p99_ms",
    "isolation_busy_p50_ms",
    "isolation_busy_p99_ms",
    "isolation_p50_ratio",
    "isolation_p99_ratio",
    "isolation_train_images_per_s",
    "isolation_train_threads",
    "isolation_serve_threads",
} | {
    f"isolation_omp_{policy or 'unset'}_{name}"
    for policy in OMP_WAIT_POLICIES
    for name in (
        "idle_p50_ms",
        "busy_p50_ms",
        "busy_p99_ms",
        "p50_ratio",
        "p99_ratio",
        "train_images_per_s",
    )
}


def test_smoke_run_reports_every_figure_as_a_positive_finite_number() -> None:
    figures = isolation_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value) and value > 0, (name, value)


def test_every_goal_names_a_figure_the_benchmark_reports() -> None:
    assert isolation_bench in BENCHMARKS
    assert {goal.figure for goal in isolation_bench.GOALS} <= FIGURES
