"""A real multi-node Ray cluster on this machine for the Ray executor's tests.

A two-node cluster (`ray.cluster_utils.Cluster`: a head and a worker node, each with
two logical CPUs and a small object store) is started for each test module that asks
for one, shared by its tests, and shut down at the module's end. Ray's files live in a
short temp dir of our own under /tmp (Unix socket paths must stay under ~107
characters), and nothing is written to the machine-wide /tmp/ray. Failure detection is
quickened (a node whose raylet refuses four 0.5 s health checks in a row is dead), so a
killed raylet is noticed in seconds.

Each test module starts its own Tandem servers with `executor="ray"`; a server's stop
disconnects it from Ray (`ray.shutdown`), so every test leaves the process clean.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from ray.cluster_utils import Cluster

from tests.conftest import make_config
from tests.harness.processes import kill_processes_using, raylets, twice_if_ray_times_out
from tests.harness.threaded import ServerThread

NODE_ARGS: dict[str, Any] = {
    "num_cpus": 2,
    # No GPU unless a test adds one: the tests compare device sets, the same on any host.
    "num_gpus": 0,
    "object_store_memory": 100 * 1024**2,
    "include_dashboard": False,
}


@dataclass
class RayTestCluster:
    cluster: Cluster
    root: str

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_node(self, **args: Any) -> Any:
        """Adds a node, once more if Ray's fixed 30 s for its raylet passed on a busy
        machine: the node forgotten if the cluster already counted it, the raylet it
        started killed (which ends its agents and workers)."""
        raylets_before = raylets(self.root)
        nodes_before = set(self.cluster.worker_nodes)

        def clean_up() -> None:
            for node in set(self.cluster.worker_nodes) - nodes_before:
                with contextlib.suppress(Exception):
                    self.cluster.remove_node(node, allow_graceful=False)
            for pid in raylets(self.root) - raylets_before:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

        return twice_if_ray_times_out(
            lambda _: self.cluster.add_node(**{**NODE_ARGS, **args}), clean_up
        )


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayTestCluster]:
    root = tempfile.mkdtemp(prefix="tdm-", dir="/tmp")
    os.makedirs(os.path.join(root, "ray"))
    saved = os.environ.get("RAY_TMPDIR")
    # Ray keeps the address of "the current cluster" in $RAY_TMPDIR/ray: ours, not /tmp/ray.
    os.environ["RAY_TMPDIR"] = root
    cluster = _start_head(root)
    try:
        test_cluster = RayTestCluster(cluster, root)
        test_cluster.add_node()
        cluster.wait_for_nodes()
        yield test_cluster
    finally:
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(root, ignore_errors=True)


def _start_head(root: str) -> Cluster:
    """The head node, once more in a fresh folder if Ray's fixed 30 s passed on a busy
    machine (CI), rather than failing a whole module."""

    def folder(attempt: int) -> str:
        path = os.path.join(root, "ray" if attempt == 1 else "ray-again")
        os.makedirs(path, exist_ok=True)
        return path

    def start(attempt: int) -> Cluster:
        return Cluster(
            initialize_head=True,
            head_node_args={
                **NODE_ARGS,
                "temp_dir": folder(attempt),
                "_system_config": {
                    "health_check_initial_delay_ms": 0,
                    "health_check_period_ms": 500,
                    "health_check_failure_threshold": 4,
                    # A slow answer on a busy machine is still an answer.
                    "health_check_timeout_ms": 10_000,
                },
            },
        )

    return twice_if_ray_times_out(start, lambda: kill_processes_using(folder(1)))


@pytest.fixture
def ray_server(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> Iterator[Callable[..., ServerThread]]:
    """A factory of Tandem servers on the test cluster, private to one test."""
    started: list[ServerThread] = []

    def start(**overrides: Any) -> ServerThread:
        config = make_config(
            tmp_path,
            executor="ray",
            ray_address=ray_cluster.address,
            **{"prewarm_workers": 1, **overrides},
        )
        server = ServerThread(config).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
