"""The Predict benchmark runs end to end (a real server, a real resnet18) on a handful of
requests and reports every figure.

Only the shape of the result is checked: timings belong to `make bench`, not to tests.
"""

from __future__ import annotations

import math

import pytest

from bench import predict as predict_bench
from bench.registry import BENCHMARKS

FIGURES = {
    "predict_p50_ms",
    "predict_p99_ms",
    "inprocess_p50_ms",
    "inprocess_p99_ms",
    "predict_p50_overhead_ms",
    "predict_floor_p50_ms",
    "predict_p50_over_floor_ms",
    "predict_c1_per_s",
    "predict_c8_per_s",
    "inprocess_c1_per_s",
    "inprocess_pinned_c1_per_s",
    "predict_c8_vs_inprocess_pinned",
    "predict_bare_batched_per_s",
    "predict_c8_vs_bare_batched",
    "predict_bare_batched_built_per_s",
    "predict_prepared_vs_built",
    "predict_c8_images_per_batch",
    "predict_c8_streams1_per_s",
    "predict_c8_streams1_images_per_batch",
    "predict_c8_vs_streams1",
    "predict_serve_threads",
}
# Differences of latencies: on a handful of calls they may come out at or below zero.
SIGNED = {"predict_p50_overhead_ms", "predict_p50_over_floor_ms"}


def test_smoke_run_reports_every_figure_as_a_finite_number() -> None:
    figures = predict_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value), (name, value)
        if name not in SIGNED:
            assert value > 0, (name, value)


def test_every_goal_names_a_figure_the_benchmark_reports() -> None:
    assert predict_bench in BENCHMARKS
    assert {goal.figure for goal in predict_bench.GOALS} <= FIGURES


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert predict_bench.percentile(values, 50) == pytest.approx(50.5)
    assert predict_bench.percentile(values, 99) == pytest.approx(99.01)
    assert predict_bench.percentile([7.0], 99) == 7.0
