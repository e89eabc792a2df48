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
from tests.harness.processes import kill_processes_using, raylets
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
        """Adds a node. Its raylet has Ray's fixed 30 s to register, as the head's has
        (`_start_head`); a start that timed out on a busy machine is cleaned up (the
        node forgotten if the cluster already counted it, the raylet it started killed,
        which ends its agents and workers) and tried once more."""
        for attempt in (1, 2):
            raylets_before = raylets(self.root)
            nodes_before = set(self.cluster.worker_nodes)
            try:
                return self.cluster.add_node(**{**NODE_ARGS, **args})
            except Exception as exc:
                if attempt == 2 or "timed out" not in str(exc).lower():
                    raise
                for node in set(self.cluster.worker_nodes) - nodes_before:
                    with contextlib.suppress(Exception):
                        self.cluster.remove_node(node, allow_graceful=False)
                for pid in raylets(self.root) - raylets_before:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        raise AssertionError("unreachable")


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
    """The head node. Ray gives a raylet (and the GCS its port file) a fixed 30 s; on a
    machine whose two cores are busy (CI) that can pass, so a timed-out start is cleaned
    up and tried once more rather than failing a whole module."""
    for attempt in (1, 2):
        temp_dir = os.path.join(root, "ray" if attempt == 1 else "ray-again")
        os.makedirs(temp_dir, exist_ok=True)
        try:
            return Cluster(
                initialize_head=True,
                head_node_args={
                    **NODE_ARGS,
                    "temp_dir": temp_dir,
                    "_system_config": {
                        "health_check_initial_delay_ms": 0,
                        "health_check_period_ms": 500,
                        "health_check_failure_threshold": 4,
                        # A slow answer on a busy machine is still an answer.
                        "health_check_timeout_ms": 10_000,
                    },
                },
            )
        except Exception as exc:
            # "... timed out during startup", or the GCS's port file that did not come
            # in time ("Timed out waiting for file .../gcs_server_port_...").
            if attempt == 2 or "timed out" not in str(exc).lower():
                raise
            kill_processes_using(temp_dir)
    raise AssertionError("unreachable")


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
