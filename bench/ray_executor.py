"""Dispatch latency and Predict throughput through the Ray executor (`--executor ray`),
in the same table as the local executor's figures.

The very same measurements as `bench/dispatch.py` and `bench/predict.py` (their
`measure(settings, executor)`), with the server running its tasks on a Ray cluster
instead of local worker processes. The cluster is started here for the run: one Ray
node on this machine (`ray.cluster_utils.Cluster`, two logical CPUs, a small object
store, no dashboard, usage stats off, its files in a short temp dir under /tmp removed
afterwards); the server finds it through `RAY_ADDRESS`. Figures carry the executor's
name: `dispatch_ray_warm_ms` beside `dispatch_warm_ms`, `predict_ray_c8_per_s` beside
`predict_c8_per_s`.

What the difference shows: the local pool hands a job over a pipe to a spawned process
on the same machine; the Ray executor hands it to an actor through Ray's scheduler and
object store, and events come back by long-polling the actor, the price of running on
any node of a cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench import dispatch, predict
from bench.report import Goal

__all__ = ["GOALS", "measure", "run"]

RAY = "ray"
GOALS: tuple[Goal, ...] = ()


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings of both benchmarks, or their SMOKE ones."""
    with _ray_cluster() as address:
        return measure(smoke, address)


def measure(smoke: bool, address: str) -> dict[str, float]:
    """Both benchmarks through the Ray executor on the cluster at `address`."""
    saved = os.environ.get("RAY_ADDRESS")
    # The server connects with address "auto", which takes RAY_ADDRESS first.
    os.environ["RAY_ADDRESS"] = address
    try:
        figures = dispatch.measure(dispatch.SMOKE if smoke else dispatch.FULL, RAY)
        figures.update(predict.measure(predict.SMOKE if smoke else predict.FULL, RAY))
    finally:
        if saved is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = saved
    return figures


@contextmanager
def _ray_cluster() -> Iterator[str]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    root = tempfile.mkdtemp(prefix="tandem-bench-ray-", dir="/tmp")
    os.makedirs(os.path.join(root, "ray"))
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = root  # Ray's "current cluster" file: ours, not /tmp/ray
    cluster: Any = Cluster(  # ray.cluster_utils is untyped
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "object_store_memory": 200 * 1024**2,
            "include_dashboard": False,
            "temp_dir": os.path.join(root, "ray"),
        },
    )
    try:
        yield str(cluster.address)
    finally:
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(root, ignore_errors=True)
