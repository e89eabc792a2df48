"""Cancel (queued and running), a worker killed mid-task, and a restart on the same
data dir: each leaves the server healthy and the next task running."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tandem.v1 import resource_service_pb2, resources_pb2, task_pb2, task_service_pb2
from tests.conftest import ServerThread, Stubs

LONG = {"epochs": 500}  # far longer than any test waits: it ends only by cancel or kill


def _running(event: task_pb2.TaskEvent) -> bool:
    return event.state == task_pb2.TASK_STATE_RUNNING


def _training_progress(event: task_pb2.TaskEvent) -> bool:
    return "batch" in event.metrics


def _set_cpu_training_limit(stubs: Stubs, value: int) -> None:
    stubs.resources.UpdateLimits(
        resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={"cpu": resources_pb2.ConcurrencyLimits(training=value)}
        )
    )


def test_cancel_queued_then_running(fresh_server: Callable[..., ServerThread]) -> None:
    server = fresh_server()
    stubs = Stubs.connect(server.port)
    _set_cpu_training_limit(stubs, 1)
    running = stubs.train(**LONG)
    stubs.wait_for(running.task_id, _running)
    queued = stubs.train(**LONG)
    assert stubs.get(queued.task_id).state == task_pb2.TASK_STATE_QUEUED
    assert stubs.get(queued.task_id).queue_position == 1
    assert "busy" in stubs.get(queued.task_id).waiting_reason

    cancelled = stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=queued.task_id))
    assert cancelled.task.state == task_pb2.TASK_STATE_CANCELLED
    assert stubs.events(queued.task_id)[-1].state == task_pb2.TASK_STATE_CANCELLED

    stubs.wait_for(running.task_id, _training_progress)
    reply = stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=running.task_id))
    assert reply.task.state == task_pb2.TASK_STATE_RUNNING  # stops at the next batch
    last = stubs.events(running.task_id)[-1]
    assert last.state == task_pb2.TASK_STATE_CANCELLED
    assert "batch boundary" in stubs.get(running.task_id).error

    # The slot is free again: the next task runs to the end.
    after = stubs.train(epochs=1)
    assert stubs.events(after.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    stubs.channel.close()


def test_worker_killed_mid_task_fails_only_that_task(
    fresh_server: Callable[..., ServerThread],
) -> None:
    server = fresh_server()
    stubs = Stubs.connect(server.port)
    victim = stubs.train(**LONG)
    stubs.wait_for(victim.task_id, _training_progress)
    assert server.service is not None
    executor = server.service.executor
    pid = server.call(lambda: executor.running()[victim.task_id])
    os.kill(pid, signal.SIGKILL)

    events = stubs.events(victim.task_id)
    assert events[-1].state == task_pb2.TASK_STATE_FAILED
    failed = stubs.get(victim.task_id)
    assert "killed by SIGKILL" in failed.error

    health = health_pb2_grpc.HealthStub(stubs.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    nxt = stubs.train(epochs=1)
    assert stubs.events(nxt.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    stubs.channel.close()


def test_restart_requeues_queued_tasks_and_keeps_limits(
    fresh_server: Callable[..., ServerThread],
) -> None:
    first = fresh_server()
    stubs = Stubs.connect(first.port)
    _set_cpu_training_limit(stubs, 0)  # hold everything in the queue
    waiting = [stubs.train(epochs=1, priority=p).task_id for p in (7, 2)]
    assert [stubs.get(t).state for t in waiting] == [task_pb2.TASK_STATE_QUEUED] * 2
    stubs.channel.close()
    first.stop()

    second = fresh_server()
    stubs = Stubs.connect(second.port)
    resources = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    assert resources.max_concurrent["cpu"].training == 0  # the limit survived the restart
    assert resources.device_usage["cpu"].queued_training == 2
    assert [stubs.get(t).state for t in waiting] == [task_pb2.TASK_STATE_QUEUED] * 2

    _set_cpu_training_limit(stubs, 1)
    low, high = waiting
    for task_id in waiting:
        assert stubs.events(task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    # Priority 2 was submitted last but ran first.
    assert stubs.get(high).start_time.ToNanoseconds() < stubs.get(low).start_time.ToNanoseconds()
    assert any("requeued" in e.message for e in stubs.events(low))
    stubs.channel.close()


def test_interrupted_training_resumes_from_its_checkpoint(
    fresh_server: Callable[..., ServerThread],
) -> None:
    first = fresh_server()
    stubs = Stubs.connect(first.port)
    task = stubs.train(epochs=3)
    stubs.wait_for(task.task_id, lambda e: e.message == "saved checkpoint epoch 1")
    stubs.channel.close()
    first.stop()  # the task is still RUNNING in the store, as after a crash

    second = fresh_server()
    stubs = Stubs.connect(second.port)
    events = stubs.events(task.task_id)
    assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    messages = [e.message for e in events]
    resumed = [m for m in messages if m.startswith("resumed from epoch ")]
    assert len(resumed) == 1 and int(resumed[0].split()[-1]) >= 1
    assert any(m.startswith("interrupted by restart; will resume") for m in messages)
    stubs.channel.close()
