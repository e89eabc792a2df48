"""Nodes that join and leave a running server's Ray cluster: a third node's devices
appear as `node-3/...`; killing its raylet fails the tasks that ran or could only run
there with a reason naming it, requeues a training task that has a checkpoint to resume
elsewhere, and leaves the other nodes working. A node that offers Ray no CPU has no
`cpu` device; one whose CPU other Ray work holds takes no actor, so its device is held
and the task goes elsewhere."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

import grpc
import pytest
import ray
from ray import cloudpickle

from engines import ray_executor
from tandem.v1 import resource_service_pb2, resources_pb2, task_pb2
from tests.conftest import Stubs
from tests.harness.threaded import ServerThread
from tests.ray.conftest import RayTestCluster

# The actor below is defined here, not in an installed module: ship it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Blocker:
    """Other Ray work that holds a whole node's CPU."""

    def ping(self) -> bool:
        return True


def devices(stubs: Stubs) -> set[str]:
    reply = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    return set(reply.device_usage)


def cpus(stubs: Stubs) -> set[str]:
    """The CPU devices, one per node with CPUs ("node-3/cpu"). A node an earlier test
    removed may still be listed for a moment, and may have taken a name: no test that
    follows another relies on names."""
    return {device for device in devices(stubs) if device.endswith("/cpu")}


def until(condition: Callable[[], bool], timeout: float = 120) -> None:
    """Polls a condition the server offers no event for (a node joining or leaving)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def limits(stubs: Stubs, device: str, **values: int) -> None:
    stubs.resources.UpdateLimits(
        resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={device: resources_pb2.ConcurrencyLimits(**values)}
        )
    )


def test_a_node_that_joins_then_dies(
    ray_cluster: RayTestCluster, ray_server: Callable[..., ServerThread]
) -> None:
    server = ray_server(prewarm_workers=0)
    stubs = Stubs.connect(server.port)
    assert devices(stubs) == {"node-1/cpu", "node-2/cpu", "cpu"}
    limits(stubs, "cpu", inference=3)  # every node's CPU, and those that join later
    # A node with a GPU as Ray counts it; this machine has no real one for NVML to read.
    node = ray_cluster.add_node(num_gpus=1)
    try:
        until(lambda: "node-3/cpu" in devices(stubs))
        reply = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
        assert set(reply.device_usage) == {
            *("node-1/cpu", "node-2/cpu", "node-3/cpu", "cpu"),
            *("node-3/cuda:0", "cuda"),
        }
        assert reply.max_concurrent["node-3/cpu"].inference == 3
        assert reply.max_concurrent["node-3/cpu"].training == 2
        assert reply.max_concurrent["node-3/cuda:0"].training == 1
        assert reply.max_concurrent["node-3/cuda:0"].inference == 3
        gpu = reply.gpu_memory_info["node-3/GPU_0"]
        assert (gpu.device, gpu.total_gb) == ("node-3/cuda:0", 0.0)  # unreadable: no room
        with pytest.raises(grpc.RpcError) as refused:
            stubs.train(device="cuda")
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # Only node-3 may start training, so both of these go there.
        limits(stubs, "node-1/cpu", training=0)
        limits(stubs, "node-2/cpu", training=0)
        resumable = stubs.train(epochs=4).task_id  # any node's CPU: may resume elsewhere
        pinned = stubs.train(epochs=500, device="node-3/cpu").task_id
        waiting = stubs.train(epochs=1, device="node-3/cpu").task_id  # node-3 is full
        for task_id in (resumable, pinned):
            stubs.wait_for(task_id, lambda e: e.state == task_pb2.TASK_STATE_RUNNING)
            assert stubs.get(task_id).assigned_device == "node-3/cpu"
        assert stubs.get(waiting).state == task_pb2.TASK_STATE_QUEUED
        limits(stubs, "cpu", training=2)  # every node's CPU again
        survivor = stubs.train(epochs=2, device="node-1/cpu").task_id
        stubs.wait_for(resumable, lambda e: e.message == "saved checkpoint epoch 1")

        node.kill_raylet()

        for task_id in (pinned, waiting):
            assert stubs.events(task_id)[-1].state == task_pb2.TASK_STATE_FAILED
        pinned_error = stubs.get(pinned).error
        assert "node-3" in pinned_error and "left the Ray cluster while running" in pinned_error
        assert stubs.get(waiting).error.endswith(
            "left the Ray cluster; the task could run only there"
        )

        events = stubs.events(resumable)
        assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
        requeued = [e for e in events if e.state == task_pb2.TASK_STATE_QUEUED][-1]
        assert "node-3" in requeued.message
        # The kill is noticed within seconds, while the task may finish another epoch:
        # it resumes from the last one it saved on node-3, whichever that was.
        match = re.search(r"will resume from epoch (\d+) elsewhere$", requeued.message)
        assert match is not None and int(match.group(1)) >= 1, requeued.message
        assert f"resumed from epoch {match.group(1)}" in [e.message for e in events]
        assert stubs.get(resumable).assigned_device in ("node-1/cpu", "node-2/cpu")

        assert stubs.events(survivor)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
        assert devices(stubs) == {"node-1/cpu", "node-2/cpu", "cpu"}  # node-3's GPU too
    finally:
        stubs.channel.close()
        ray_cluster.cluster.remove_node(node, allow_graceful=False)


def test_a_node_without_cpus_for_ray_gets_no_cpu_device(
    ray_cluster: RayTestCluster, ray_server: Callable[..., ServerThread]
) -> None:
    server = ray_server(prewarm_workers=1)
    stubs = Stubs.connect(server.port)
    before = cpus(stubs)
    assert len(before) == 2  # the module's two nodes
    # `ray start --num-cpus=0` on a GPU machine: its GPU is a device, its CPU is not.
    node = ray_cluster.add_node(num_cpus=0, num_gpus=1)
    try:
        until(lambda: any(d.endswith("/cuda:0") for d in devices(stubs)))
        gpu = next(d for d in devices(stubs) if d.endswith("/cuda:0"))
        assert f"{gpu.partition('/')[0]}/cpu" not in devices(stubs)
        assert cpus(stubs) == before
        task_id = stubs.train().task_id  # any node's CPU
        assert stubs.events(task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
        assert stubs.get(task_id).assigned_device in before
    finally:
        stubs.channel.close()
        ray_cluster.cluster.remove_node(node, allow_graceful=False)


def test_a_device_where_no_actor_can_be_placed_is_held_and_the_task_runs_elsewhere(
    ray_cluster: RayTestCluster,
    ray_server: Callable[..., ServerThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = ray_server(prewarm_workers=0)
    stubs = Stubs.connect(server.port)
    before = cpus(stubs)
    assert len(before) == 2  # the module's two nodes
    node = ray_cluster.add_node(num_cpus=1, resources={"busy": 1})
    try:
        # The server's process is Ray's driver: other work placed from here takes the
        # node's one CPU, so that even an actor's 0.01 share of it must wait.
        blocker = ray.remote(Blocker).options(num_cpus=1, resources={"busy": 1}).remote()
        assert ray.get(blocker.ping.remote(), timeout=120)
        until(lambda: len(cpus(stubs)) == 3)
        (busy,) = cpus(stubs) - before
        for device in before:
            limits(stubs, device, training=0)
        monkeypatch.setattr(ray_executor, "ACTOR_START_S", 2.0)
        task_id = stubs.train().task_id  # only `busy` may start it
        stubs.wait_for(task_id, lambda e: e.message.endswith("; queued again"))
        monkeypatch.setattr(ray_executor, "ACTOR_START_S", 60.0)  # for the other nodes
        reply = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
        assert reply.max_concurrent[busy].training == 0  # held
        assert reply.max_concurrent[busy].inference == 0
        for device in before:
            limits(stubs, device, training=2)
        events = stubs.events(task_id)
        assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
        requeued = [e.message for e in events if e.state == task_pb2.TASK_STATE_QUEUED][-1]
        assert requeued.startswith(f"no Ray actor could start on {busy}: none was placed")
        assert stubs.get(task_id).assigned_device in before
    finally:
        stubs.channel.close()
        ray_cluster.cluster.remove_node(node, allow_graceful=False)
