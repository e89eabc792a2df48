"""The Ray executor's parts that need no cluster: the mailbox that carries a job's events
(in order, nothing lost, a lost reply sent again), device names across a cluster's
nodes, and the shared-filesystem check a node makes before it runs a job."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engines import ray_cluster
from engines.jobs import InferenceJob, JobEvent, JobResult, ServeJob, TrainingJob
from engines.protocol import JobDone, JobEventMsg
from engines.ray_actor import Mailbox, is_final, visibility_problem
from scheduler import (
    DEFAULT_GPU_LIMITS,
    Arbiter,
    DeviceUnavailable,
    GpuInfo,
    InvalidDevice,
    Kind,
    Request,
    resolve_among,
    resolve_candidates,
)
from scheduler.memory import GIB, MemoryGate

TANDEM = str(Path(sys.executable).parent / "tandem")
CLUSTER = ("node-1/cpu", "node-2/cpu", "node-2/cuda:0", "node-2/cuda:1", "node-3/cpu")


def test_mailbox_numbers_messages_and_keeps_them_until_acknowledged() -> None:
    box = Mailbox()
    for i in range(5):
        assert box.put(JobEventMsg("t", JobEvent(str(i)))) == i + 1
    first = box.take(after=0, wait_s=0)
    assert [seq for seq, _ in first] == [1, 2, 3, 4, 5]
    # The reply was lost on the way: asking again from the same place gets it again.
    assert box.take(after=0, wait_s=0) == first
    # Asking for what follows 3 acknowledges 1..3; they are gone, 4 and 5 are not.
    assert [seq for seq, _ in box.take(after=3, wait_s=0)] == [4, 5]
    assert [seq for seq, _ in box.take(after=0, wait_s=0)] == [4, 5]
    assert box.take(after=5, wait_s=0) == []


def test_mailbox_take_waits_for_the_next_message() -> None:
    box = Mailbox()
    threading.Timer(0.05, box.put, args=(JobDone("t", JobResult({})),)).start()
    taken = box.take(after=0, wait_s=30)
    assert len(taken) == 1 and is_final(taken[0][1])


def test_mailbox_under_a_concurrent_writer_loses_and_reorders_nothing() -> None:
    box = Mailbox()
    total = 20_000

    def write() -> None:
        for i in range(total):
            box.put(JobEventMsg("t", JobEvent(str(i))))

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[str] = []
    after = 0
    while len(seen) < total:
        batch = box.take(after, wait_s=5, limit=97)
        for seq, message in batch:
            assert seq == after + 1
            after = seq
            assert isinstance(message, JobEventMsg)
            seen.append(message.event.message)
    writer.join()
    assert seen == [str(i) for i in range(total)]


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("cpu", ("node-1/cpu", "node-2/cpu", "node-3/cpu")),
        ("cuda", ("node-2/cuda:0", "node-2/cuda:1")),
        ("auto", ("node-2/cuda:0", "node-2/cuda:1")),
        ("cuda:1", ("node-2/cuda:1",)),
        (" Node-2/CPU ", ("node-2/cpu",)),
        ("node-2/cuda", ("node-2/cuda:0", "node-2/cuda:1")),
        ("node-2/cuda:0", ("node-2/cuda:0",)),
        ("node-3/auto", ("node-3/cpu",)),
    ],
)
def test_cluster_device_names(requested: str, expected: tuple[str, ...]) -> None:
    assert resolve_among(requested, CLUSTER) == expected


def test_cluster_device_errors_say_what_exists() -> None:
    cpus_only = ("node-1/cpu", "node-2/cpu")
    with pytest.raises(DeviceUnavailable, match="no GPU"):
        resolve_among("cuda", cpus_only)
    assert resolve_among("auto", cpus_only) == cpus_only
    with pytest.raises(DeviceUnavailable, match=r"no node 'node-9'.*node-1, node-2"):
        resolve_among("node-9/cpu", cpus_only)
    with pytest.raises(DeviceUnavailable, match="cuda:2 does not exist"):
        resolve_among("cuda:2", CLUSTER)
    with pytest.raises(DeviceUnavailable, match="node-1 has no GPU"):
        resolve_among("node-1/cuda", CLUSTER)
    with pytest.raises(InvalidDevice):
        resolve_among("node-1/tpu", CLUSTER)


@pytest.mark.parametrize("requested", ["cpu", "auto", "cuda", "cuda:1"])
def test_one_machine_resolves_as_before(requested: str) -> None:
    assert resolve_among(requested, ("cpu", "cuda:0", "cuda:1")) == resolve_candidates(requested, 2)


def _training(tmp_path: Path, dataset: str) -> TrainingJob:
    (tmp_path / "tasks").mkdir(exist_ok=True)
    return TrainingJob(
        "t1", "resnet18", dataset, 1, 8, 0.001, "adam", 32, 0, 0.2, "cpu",
        str(tmp_path / "tasks" / "t1"),
    )  # fmt: skip


def test_a_node_that_cannot_see_the_files_fails_the_job_clearly(tmp_path: Path) -> None:
    assert visibility_problem(_training(tmp_path, "synthetic"), "node-2") == ""
    missing = str(tmp_path / "elsewhere" / "photos")
    problem = visibility_problem(_training(tmp_path, missing), "node-2")
    assert problem.startswith(f"node-2 cannot see the dataset {missing}")
    assert "same paths on every node" in problem
    inference = InferenceJob(
        "t2", str(tmp_path / "model.pt"), "synthetic", 8, 3, "cpu", str(tmp_path / "tasks" / "t2")
    )
    assert "cannot see the model file" in visibility_problem(inference, "node-3")
    no_data_dir = InferenceJob("t3", __file__, "synthetic", 8, 3, "cpu", "/nowhere/tasks/t3")
    assert "cannot see the data dir" in visibility_problem(no_data_dir, "node-3")
    # A served model's file travels through Ray's object store: nothing to see.
    assert visibility_problem(ServeJob("s", "/nowhere/model.pt", "cpu"), "node-3") == ""


class ClusterGpus:
    """A cluster's GPUs as the inventory seam gives them: two nodes, one GPU each."""

    def __init__(self, free_gib: dict[str, float]) -> None:
        self.free = free_gib

    def gpus(self) -> list[GpuInfo]:
        return [
            GpuInfo(0, "Fake", 16 * GIB, int((16 - free) * GIB), int(free * GIB), node=node)
            for node, free in self.free.items()
        ]

    def gpu_count(self) -> int:
        return len(self.free)

    def memory(self, index: int) -> GpuInfo:
        return self.gpus()[index]


def test_memory_admission_is_per_gpu_of_each_node() -> None:
    inventory = ClusterGpus({"node-1": 2.0, "node-2": 10.0})
    gate = MemoryGate(inventory, headroom_bytes=GIB // 2)
    devices = ("node-1/cuda:0", "node-2/cuda:0")
    arbiter = Arbiter({d: DEFAULT_GPU_LIMITS for d in devices}, gate=gate)
    big = Request("big", Kind.TRAINING, 5, devices, memory_bytes=6 * GIB)
    (admission,) = arbiter.submit(big)
    assert admission.device == "node-2/cuda:0"  # the only GPU with room
    assert gate.reserved("node-2/cuda:0") == 6 * GIB
    waiting = Request("next", Kind.INFERENCE, 5, devices, memory_bytes=int(9.8 * GIB))
    assert arbiter.submit(waiting) == []  # 2 - 0.5 GB on node-1, 16 - 6 - 0.5 on node-2
    info = arbiter.waiting_info("next")
    assert info is not None and "needs ~9.8 GB on node-1/cuda:0, 1.5 GB free" in info.reason
    inventory.free["node-1"] = 12.0  # memory freed on node-1, read at the next refresh
    assert [a.device for a in arbiter.tick()] == ["node-1/cuda:0"]


def test_node_names_follow_first_sight_and_survive_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table: list[dict[str, object]] = []

    def node(node_id: str, *, head: bool = False, alive: bool = True) -> dict[str, object]:
        resources = {"CPU": 2.0, **({"node:__internal_head__": 1.0} if head else {})}
        return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": "10.0.0.1",
                "Resources": resources}  # fmt: skip

    monkeypatch.setattr(ray_cluster, "_ray_nodes", lambda: table)
    names = tmp_path / "ray-nodes.json"
    table[:] = [node("b"), node("a", head=True)]
    first = ray_cluster.RayCluster("auto", names_file=names)
    assert [(n.name, n.node_id, n.head) for n in first.refresh()] == [
        ("node-1", "a", True),
        ("node-2", "b", False),
    ]
    assert first.nodes()[0].devices == ("cpu",)
    # A restarted server reads the names back; a node that left and a new one that
    # joined: the new one gets the next number, never a name already given.
    table[:] = [node("a", head=True), node("b", alive=False), node("c")]
    again = ray_cluster.RayCluster("auto", names_file=names)
    assert [(n.name, n.node_id) for n in again.refresh()] == [("node-1", "a"), ("node-3", "c")]
    table[:] = [node("a", head=True), node("b")]
    assert [n.name for n in again.refresh()] == ["node-1", "node-2"]
    # A node the server saw leave stays gone, even while Ray still lists it alive.
    again.forget("node-2")
    assert [n.name for n in again.nodes()] == ["node-1"]
    assert [n.name for n in again.refresh()] == ["node-1"]


def test_a_node_without_a_cpu_share_has_no_cpu_device() -> None:
    def node(cpus: float, gpus: int) -> ray_cluster.RayNode:
        return ray_cluster.RayNode("node-1", "a", "10.0.0.1", "h", cpus, gpus, head=True)

    # `ray start --head --num-cpus=0`: no actor could be placed on its CPU.
    assert node(0.0, 0).devices == ()
    assert node(0.0, 2).devices == ("cuda:0", "cuda:1")
    assert node(ray_cluster.CPU_SHARE, 0).devices == ("cpu",)


def test_an_unreachable_ray_address_stops_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [
            *(TANDEM, "serve", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"),
            *("--grpc-port", "0", "--http-port", "0", "--prewarm-workers", "0"),
            *("--data-dir", str(tmp_path / "data")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"tandem: cannot start: cannot reach the Ray cluster at 127.0.0.1:{port}: "
        "Connection refused"
    ]
