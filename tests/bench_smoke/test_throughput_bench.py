"""The throughput benchmark runs end to end (a real server training and inferring, the
bare loops in their own process) on a handful of tiny images and reports every figure.

Only the shape of the result is checked: timings belong to `make bench`, not to tests.
"""

from __future__ import annotations

import math

from bench import throughput as throughput_bench
from bench.registry import BENCHMARKS
from tandem.v1 import task_pb2

FIGURES = {
    f"{prefix}_{name}"
    for prefix in ("train", "infer")
    for name in (
        "tandem_images_per_s",
        "bare_images_per_s",
        "bare_pinned_images_per_s",
        "lone_vs_bare",
        "pinned_ratio",
        "threads",
        "bare_threads",
    )
}


def test_smoke_run_reports_every_figure_as_a_positive_finite_number() -> None:
    figures = throughput_bench.run(smoke=True)

    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, float), name
        assert math.isfinite(value) and value > 0, (name, value)


def test_every_goal_names_a_figure_the_benchmark_reports() -> None:
    assert throughput_bench in BENCHMARKS
    assert {goal.figure for goal in throughput_bench.GOALS} <= FIGURES


def test_epoch_metrics_come_from_end_of_epoch_events_only() -> None:
    def metrics(**values: float) -> task_pb2.TaskEvent:
        return task_pb2.TaskEvent(type=task_pb2.EVENT_TYPE_METRICS, metrics=values)

    events = [
        task_pb2.TaskEvent(type=task_pb2.EVENT_TYPE_LOG, message="training resnet18"),
        metrics(epoch=1, batch=3, images_per_sec=10.0, threads=2.0),  # within the epoch
        metrics(epoch=1, images_per_sec=11.0, threads=2.0),
        metrics(epoch=2, batch=3, images_per_sec=12.0, threads=1.0),
        metrics(epoch=2, images_per_sec=13.0, threads=1.0),
    ]

    epochs = throughput_bench._epoch_metrics(events)
    assert [epoch["images_per_sec"] for epoch in epochs] == [11.0, 13.0]
    assert [epoch["threads"] for epoch in epochs] == [2.0, 1.0]
