"""The log fan-out benchmark runs end to end (a real training task, followers in their
own process streaming `Logs` over gRPC) and reports every figure.

Only the shape of the result is checked: timings belong to `make bench`, not to tests.
"""

from __future__ import annotations

import math

import pytest

from bench import logs as logs_bench
from bench.registry import BENCHMARKS

FIGURES = {"log_p50_ms", "log_p99_ms", "log_max_ms", "log_events", "log_followers"}


def test_smoke_run_reports_every_figure_as_a_positive_finite_number() -> None:
    figures = logs_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value) and value > 0, (name, value)


def test_every_goal_names_a_figure_the_benchmark_reports() -> None:
    assert logs_bench in BENCHMARKS
    assert {goal.figure for goal in logs_bench.GOALS} <= FIGURES


def test_only_events_stamped_after_the_followers_were_live_count() -> None:
    receipts = [(1, 9.0, 12.0), (2, 10.5, 10.502), (3, 11.0, 11.004)]

    assert logs_bench.live_latencies(receipts, live_since=10.0) == pytest.approx([0.002, 0.004])
    with pytest.raises(RuntimeError, match="no live event"):
        logs_bench.live_latencies(receipts, live_since=20.0)
