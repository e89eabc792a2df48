"""The dispatch benchmark runs end to end (real servers, a prewarmed worker and a cold
one, tiny training tasks) and reports every figure.

Only the shape of the result is checked: timings belong to `make bench`, not to tests.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import dispatch as dispatch_bench
from bench.harness import figure
from bench.registry import BENCHMARKS
from tandem.v1 import task_pb2

FIGURES = {
    "dispatch_warm_ms",
    "dispatch_warm_p90_ms",
    "dispatch_warm_first_ms",
    "dispatch_cold_ms",
    "dispatch_job_setup_ms",
}


def test_smoke_run_reports_every_figure_as_a_positive_finite_number() -> None:
    figures = dispatch_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value) and value > 0, (name, value)


def test_every_goal_names_a_figure_the_benchmark_reports() -> None:
    assert dispatch_bench in BENCHMARKS
    assert {goal.figure for goal in dispatch_bench.GOALS} <= FIGURES


def _event(seconds: float, **fields: Any) -> task_pb2.TaskEvent:
    event = task_pb2.TaskEvent(**fields)
    event.time.FromNanoseconds(int(seconds * 1e9))
    return event


def test_dispatch_is_the_gap_after_the_running_state() -> None:
    events = [
        _event(10.0, type=task_pb2.EVENT_TYPE_STATE, state=task_pb2.TASK_STATE_QUEUED),
        _event(10.5, type=task_pb2.EVENT_TYPE_STATE, state=task_pb2.TASK_STATE_RUNNING),
        _event(10.525, type=task_pb2.EVENT_TYPE_LOG, message="training squeezenet1_1"),
        _event(11.0, type=task_pb2.EVENT_TYPE_STATE, state=task_pb2.TASK_STATE_SUCCEEDED),
    ]

    assert dispatch_bench.dispatch_seconds(events) == pytest.approx(0.025, abs=1e-6)


def test_a_task_that_never_ran_has_no_dispatch_time() -> None:
    events = [
        _event(1.0, type=task_pb2.EVENT_TYPE_STATE, state=task_pb2.TASK_STATE_QUEUED),
        _event(2.0, type=task_pb2.EVENT_TYPE_STATE, state=task_pb2.TASK_STATE_CANCELLED),
    ]

    with pytest.raises(RuntimeError, match="no event follows"):
        dispatch_bench.dispatch_seconds(events)


def test_figures_of_another_executor_carry_its_name() -> None:
    assert figure("dispatch_warm_ms", "local") == "dispatch_warm_ms"
    assert figure("dispatch_warm_ms", "ray") == "dispatch_ray_warm_ms"
    assert figure("predict_c8_per_s", "ray") == "predict_ray_c8_per_s"
