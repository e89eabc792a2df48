"""Nodes that join and leave a running server's Ray cluster: a third node's devices
appear as `node-3/...`; killing its raylet fails the tasks that ran or could only run
there with a reason naming it, requeues a training task that has a checkpoint to resume
elsewhere, and leaves the other nodes working."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from server.threaded import ServerThread
from tandem.v1 import resource_service_pb2, resources_pb2, task_pb2
from tests.conftest import Stubs
from tests.ray.conftest import RayTestCluster


def devices(stubs: Stubs) -> set[str]:
    reply = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    return set(reply.device_usage)


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
        assert requeued.message.endswith("will resume from epoch 1 elsewhere")
        assert "resumed from epoch 1" in [e.message for e in events]
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
    # `ray start --num-cpus=0` on a GPU machine: its GPU is a device, its CPU is not.
    node = ray_cluster.add_node(num_cpus=0, num_gpus=1)
    try:
        until(lambda: any(d.endswith("/cuda:0") for d in devices(stubs)))
        gpu = next(d for d in devices(stubs) if d.endswith("/cuda:0"))
        name = gpu.partition("/")[0]
        assert name not in ("node-1", "node-2")
        assert f"{name}/cpu" not in devices(stubs)
        task_id = stubs.train().task_id  # any node's CPU
        assert stubs.events(task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
        assert stubs.get(task_id).assigned_device in ("node-1/cpu", "node-2/cpu")
    finally:
        stubs.channel.close()
        ray_cluster.cluster.remove_node(node, allow_graceful=False)
