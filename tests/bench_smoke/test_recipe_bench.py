"""The recipe benchmark runs end to end (a real server training with augmentation and
in bf16 and fp32, the bare loop in its own process) on a handful of tiny images and
reports every figure. Only the shape of the result is checked: timings belong to
`make bench`."""

from __future__ import annotations

import math

from bench import recipe as recipe_bench
from bench.registry import BENCHMARKS

FIGURES = {
    "recipe_augment_tandem_images_per_s",
    "recipe_augment_bare_images_per_s",
    "recipe_augment_light_vs_bare",
    "recipe_bf16_images_per_s",
    "recipe_fp32_images_per_s",
    "recipe_bf16_vs_fp32",
}


def test_smoke_run_reports_every_figure_as_a_positive_finite_number() -> None:
    figures = recipe_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value) and value > 0, (name, value)


def test_every_goal_names_a_figure_the_benchmark_reports() -> None:
    assert recipe_bench in BENCHMARKS
    assert {goal.figure for goal in recipe_bench.GOALS} <= FIGURES
