"""The arbiter through gRPC: run-time limits, priority order, and GPU memory admission
against a fake GPU inventory (the only fake: the NVML boundary)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import grpc
import pytest

from scheduler import StaticInventory
from scheduler.memory import GIB
from tandem.v1 import resource_service_pb2, resources_pb2, task_pb2, task_service_pb2
from tests.conftest import ServerThread, Stubs


def _limits(stubs: Stubs, device: str, **values: int) -> resource_service_pb2.UpdateLimitsResponse:
    return stubs.resources.UpdateLimits(
        resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={device: resources_pb2.ConcurrencyLimits(**values)}
        )
    )


def test_runtime_limit_of_one_and_priority_order(fresh_server: Callable[..., ServerThread]) -> None:
    server = fresh_server()
    stubs = Stubs.connect(server.port)
    _limits(stubs, "cpu", training=0)  # hold everything while the queue fills
    low = [stubs.train(epochs=1, priority=7).task_id for _ in range(3)]
    urgent = stubs.train(epochs=1, priority=2).task_id
    queued = stubs.get(urgent)
    assert queued.queue_position == 1  # submitted last, first in line
    assert [stubs.get(t).queue_position for t in low] == [2, 3, 4]
    assert (
        stubs.get(low[0]).waiting_reason
        == "1 more urgent task ahead; cpu training is paused (limit 0)"
    )

    reply = _limits(stubs, "cpu", training=1)  # growing the limit admits at once
    assert reply.max_concurrent["cpu"].training == 1
    for task_id in [urgent, *low]:
        assert stubs.events(task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    tasks = sorted(
        (stubs.get(t) for t in [urgent, *low]), key=lambda t: t.start_time.ToNanoseconds()
    )
    assert tasks[0].task_id == urgent
    assert [t.task_id for t in tasks[1:]] == low  # equal priority: submit order
    # Never more than one at a time: each started after the previous one ended.
    for before, after in itertools.pairwise(tasks):
        assert after.start_time.ToNanoseconds() >= before.end_time.ToNanoseconds()
    stubs.channel.close()


@pytest.fixture
def gpu_server(fresh_server: Callable[..., ServerThread]) -> tuple[ServerThread, StaticInventory]:
    inventory = StaticInventory.uniform(2, total_bytes=8 * GIB)
    inventory.set_used(0, int(7.6 * GIB))  # cuda:0 is nearly full
    inventory.set_used(1, int(7.6 * GIB))
    return fresh_server(inventory=inventory, prewarm_workers=0), inventory


def test_gpu_task_waits_for_memory_and_says_why(
    gpu_server: tuple[ServerThread, StaticInventory],
) -> None:
    server, _ = gpu_server
    stubs = Stubs.connect(server.port)
    task = stubs.train(device="cuda", batch_size=4, image_size=32)
    queued = stubs.get(task.task_id)
    assert queued.state == task_pb2.TASK_STATE_QUEUED
    assert "needs ~" in queued.waiting_reason and "GB free" in queued.waiting_reason
    assert "cuda:0" in queued.waiting_reason and "cuda:1" in queued.waiting_reason
    stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.task_id))
    stubs.channel.close()


def test_a_gpu_task_too_big_for_any_gpu_is_refused(
    gpu_server: tuple[ServerThread, StaticInventory],
) -> None:
    server, _ = gpu_server
    stubs = Stubs.connect(server.port)
    with pytest.raises(grpc.RpcError) as info:
        stubs.train(device="cuda", model="resnet50", batch_size=4096, image_size=512)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "GPU memory" in info.value.details()
    stubs.channel.close()


def test_resources_and_limits_with_gpus(gpu_server: tuple[ServerThread, StaticInventory]) -> None:
    server, _ = gpu_server
    stubs = Stubs.connect(server.port)
    reply = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    assert set(reply.device_usage) == {"cpu", "cuda", "cuda:0", "cuda:1"}
    assert set(reply.gpu_memory_info) == {"GPU_0", "GPU_1"}
    memory = reply.gpu_memory_info["GPU_0"]
    assert (memory.total_gb, memory.device) == (8.0, "cuda:0")
    assert memory.allocated_gb + memory.free_gb == pytest.approx(8.0)
    assert reply.max_concurrent["cuda"].training == 1
    assert reply.max_concurrent["cuda"].inference == 3

    # The seed's own call: {"max_concurrent": {"cuda": {"training": 1, "inference": 5}}}
    updated = _limits(stubs, "cuda", training=1, inference=5)
    for device in ("cuda", "cuda:0", "cuda:1"):
        assert updated.max_concurrent[device].inference == 5
    assert updated.max_concurrent["cpu"].inference == 4
    stubs.channel.close()
