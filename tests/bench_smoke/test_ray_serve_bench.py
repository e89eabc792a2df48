"""The Ray Serve comparison runs end to end (Tandem and a local Ray Serve serving the same
resnet18, 8 callers each; Ray Serve as one replica with every core and as one
replica per core) on a handful of calls and reports every figure.

Ray Serve is a bench-only package (requirements-bench.txt, installed by `make bench`):
without it the smoke run is skipped with the reason, as the runner skips the benchmark.
Only the shape of the result is checked: timings belong to `make bench`, not to tests.
"""

from __future__ import annotations

import math

import pytest

from bench import ray_serve as ray_serve_bench
from bench.registry import BENCHMARKS

FIGURES = {
    "ray_serve_tandem_c8_per_s",
    "ray_serve_all_cores_c8_per_s",
    "ray_serve_per_core_c8_per_s",
    "ray_serve_pinned_c8_per_s",
    "predict_c8_vs_ray_serve_best",
    "predict_c8_vs_ray_serve_pinned",
    "ray_serve_threads",
    "ray_serve_all_cores_threads",
    "ray_serve_per_core_replicas",
}


def test_smoke_run_reports_every_figure_as_a_positive_finite_number() -> None:
    # Not importorskip("ray.serve") alone: with `ray` but not its `serve` extra it
    # imports, then fails to start.
    reason = ray_serve_bench.unavailable()
    if reason is not None:
        pytest.skip(f"{reason} (bench-only, installed by make bench)")

    figures = ray_serve_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value) and value > 0, (name, value)


def test_every_goal_names_a_figure_the_benchmark_reports() -> None:
    assert ray_serve_bench in BENCHMARKS
    assert {goal.figure for goal in ray_serve_bench.GOALS} <= FIGURES
