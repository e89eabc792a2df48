"""The scaling benchmark runs end to end (a `tandem serve` process, 1, 2 and 4 trainings
and served models at once) on short windows and reports every figure.

Only the shape of the result is checked: timings belong to `make bench`, not to tests.
"""

from __future__ import annotations

import math

from bench import scaling as scaling_bench
from bench.registry import BENCHMARKS

FIGURES = {
    name
    for level in scaling_bench.LEVELS
    for name in (
        f"scale_train_{level}_images_per_s",
        f"scale_train_{level}_per_task_images_per_s",
        f"scale_train_{level}_threads",
        f"scale_predict_{level}_per_s",
        f"scale_rss_{level}_mb",
        f"scale_workers_pss_{level}_mb",
    )
}


def test_smoke_run_reports_every_figure_as_a_positive_finite_number() -> None:
    figures = scaling_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value) and value > 0, (name, value)


def test_every_goal_names_a_figure_the_benchmark_reports() -> None:
    assert scaling_bench in BENCHMARKS
    assert {goal.figure for goal in scaling_bench.GOALS} <= FIGURES
