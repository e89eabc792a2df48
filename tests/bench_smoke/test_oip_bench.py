"""The Open Inference Protocol benchmark runs end to end (a real server, a model trained
and published by name, ModelInfer and Predict in ABBA turns) on a handful of calls.

Only the shape of the result is checked: timings belong to `make bench`, not to tests.
"""

from __future__ import annotations

import math

from bench import oip as oip_bench
from bench.registry import BENCHMARKS

FIGURES = {"oip_c8_per_s", "oip_predict_c8_per_s", "oip_c8_vs_predict"}


def test_smoke_run_reports_every_figure_as_a_positive_finite_number() -> None:
    figures = oip_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value) and value > 0, (name, value)


def test_the_benchmark_is_registered_and_its_goal_names_a_figure() -> None:
    assert oip_bench in BENCHMARKS
    assert {goal.figure for goal in oip_bench.GOALS} <= FIGURES
