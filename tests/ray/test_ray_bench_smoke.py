"""The Ray executor's benchmark (bench/ray_executor.py) runs end to end on the test
cluster and reports the dispatch and Predict figures under the executor's name, so they
sit beside the local executor's in `make bench`'s table. Only the shape is checked."""

from __future__ import annotations

import math

from bench import predict as predict_bench
from bench import ray_executor as ray_bench
from bench.harness import figure
from bench.registry import BENCHMARKS
from tests.bench_smoke.test_dispatch_bench import FIGURES as DISPATCH
from tests.bench_smoke.test_predict_bench import FIGURES as PREDICT
from tests.bench_smoke.test_predict_bench import SIGNED
from tests.ray.conftest import RayTestCluster


def test_smoke_run_reports_every_figure_through_ray(ray_cluster: RayTestCluster) -> None:
    assert ray_bench in BENCHMARKS
    figures = ray_bench.measure(smoke=True, address=ray_cluster.address)

    # The one-stream server is the local executor's only (one Ray connection a process).
    expected = DISPATCH | (PREDICT - predict_bench.ONE_STREAM_FIGURES)
    assert set(figures) == {figure(name, "ray") for name in expected}
    assert "dispatch_ray_warm_ms" in figures and "predict_ray_c8_per_s" in figures
    signed = {figure(name, "ray") for name in SIGNED}
    for name, value in figures.items():
        assert math.isfinite(value), (name, value)
        assert value > 0 or name in signed, (name, value)
