"""The end-to-end tests of the local executor, with `executor=ray` on a real two-node Ray
cluster: every node's devices in GetResources and /api/v2/resources, train -> infer ->
predict across nodes, logs to the end, cancel, limits per node, priority order,
preemption, and an actor that dies. One server for the module (limits are put back by each test)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from engines.predict import from_path
from server.gateway import GatewayServer, create_gateway
from tandem.v1 import (
    inference_service_pb2,
    resource_service_pb2,
    resources_pb2,
    task_pb2,
    task_service_pb2,
)
from tests.conftest import Stubs, make_config
from tests.harness.threaded import ServerThread
from tests.ray.conftest import RayTestCluster

LONG = {"epochs": 500}  # ends only by cancel or kill
NODE_CPUS = ("node-1/cpu", "node-2/cpu")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(scope="module")
def flow(
    ray_cluster: RayTestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, Stubs]]:
    config = make_config(
        tmp_path_factory.mktemp("rayflow"),
        executor="ray",
        ray_address=ray_cluster.address,
        prewarm_workers=1,
        predict_max_wait_s=0.05,
        # Tasks of equal priority never preempt each other; the preemption test's do.
        preempt_min_runtime_s=0.0,
    )
    server = ServerThread(config).start()
    stubs = Stubs.connect(server.port)
    yield server, stubs
    stubs.channel.close()
    server.stop()


def limits(stubs: Stubs, device: str, **values: int) -> None:
    stubs.resources.UpdateLimits(
        resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={device: resources_pb2.ConcurrencyLimits(**values)}
        )
    )


def running(event: task_pb2.TaskEvent) -> bool:
    return event.state == task_pb2.TASK_STATE_RUNNING


def progress(event: task_pb2.TaskEvent) -> bool:
    return "batch" in event.metrics


def cancel(stubs: Stubs, task_id: str) -> task_pb2.Task:
    return stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=task_id)).task


def png(colour: tuple[int, int, int], shade: int) -> bytes:
    image = Image.new("RGB", (24, 24), tuple(max(0, c - shade) for c in colour))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_node_shows_in_grpc_and_rest_resources(flow: tuple[ServerThread, Stubs]) -> None:
    server, stubs = flow
    reply = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    assert set(reply.device_usage) == {*NODE_CPUS, "cpu"}
    for device in (*NODE_CPUS, "cpu"):  # the local defaults, per node; "cpu" is all of them
        assert (reply.max_concurrent[device].training, reply.max_concurrent[device].inference) == (
            2,
            4,
        )

    gateway = GatewayServer(create_gateway(f"127.0.0.1:{server.port}"), "127.0.0.1", 0, grace_s=2)

    async def start() -> None:
        gateway.start()

    asyncio.run_coroutine_threadsafe(start(), server.loop).result(timeout=30)
    try:
        rest = requests.get(f"{gateway.url}/api/v2/resources", timeout=60).json()
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), server.loop).result(timeout=30)
    assert set(rest["device_usage"]) == {*NODE_CPUS, "cpu"}
    assert rest["max_concurrent"]["node-2/cpu"] == {"training": 2, "inference": 4}


def test_train_infer_and_predict_across_nodes(flow: tuple[ServerThread, Stubs]) -> None:
    server, stubs = flow
    folder = server.config.dataset_roots[0] / "colours"
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            (folder / name / f"{i:02d}.png").write_bytes(png(colour, 5 * i))
    trained = stubs.train(
        model="resnet18", dataset="colours", image_size=24, epochs=3, batch_size=6, val_split=0.0
    )
    events = stubs.events(trained.task_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.state for e in events if e.type == task_pb2.EVENT_TYPE_STATE] == [
        task_pb2.TASK_STATE_QUEUED,
        task_pb2.TASK_STATE_RUNNING,
        task_pb2.TASK_STATE_SUCCEEDED,
    ]
    assert [e.metrics["epoch"] for e in events if "val_loss" not in e.metrics and e.metrics
            and "batch" not in e.metrics] == [1.0, 2.0, 3.0]  # fmt: skip
    done = stubs.get(trained.task_id)
    assert done.assigned_device in NODE_CPUS
    assert Path(done.model_path).is_file()

    # Batch inference kept to the other node, by name.
    request = inference_service_pb2.InferRequest(
        task_id=trained.task_id, dataset="colours", top_k=2, device="node-2/cpu"
    )
    inferred = stubs.inference.Infer(request, timeout=30).task
    assert stubs.events(inferred.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    finished = stubs.get(inferred.task_id)
    assert finished.assigned_device == "node-2/cpu"
    rows = [json.loads(line) for line in Path(finished.output_path).read_text().splitlines()]
    assert sorted(row["file"] for row in rows) == sorted(
        f"{name}/{i:02d}.png" for name in COLOURS for i in range(6)
    )
    assert all(row["label"] == row["file"].split("/")[0] for row in rows)
    correct = sum(row["predictions"][0]["label"] == row["label"] for row in rows)
    assert finished.metrics["accuracy"] == pytest.approx(correct / len(rows))

    # What the model learned is left to luck (three epochs on 18 images, thread counts,
    # kernel order); what is checked is that every path runs the same model file: the
    # answers batch inference wrote are those of the file evaluated here, in this process,
    # and those online Predict gives on either node (the model goes there through Ray's
    # object store).
    images = [(folder / row["file"]).read_bytes() for row in rows]
    here = from_path(done.model_path, "cpu").predict_images(images, top_k=2)
    for row, answer in zip(rows, here, strict=True):
        assert not isinstance(answer, Exception)
        same_answer(row["predictions"], [(p.label, p.score) for p in answer], row["file"])
    for device in NODE_CPUS:
        for row, image in zip(rows, images, strict=True):
            reply = stubs.inference.Predict(
                inference_service_pb2.PredictRequest(
                    task_id=trained.task_id, image=image, top_k=2, device=device
                ),
                timeout=120,
            )
            assert reply.device == device
            online = [(p.label, p.score) for p in reply.predictions]
            same_answer(row["predictions"], online, f"{row['file']} on {device}")


def same_answer(written: list[dict[str, Any]], given: list[tuple[str, float]], what: str) -> None:
    """The same top-k labels in the same order, and the same scores to float rounding."""
    assert [p["label"] for p in written] == [label for label, _ in given], what
    assert [p["score"] for p in written] == pytest.approx([s for _, s in given], abs=1e-5), what


def test_logs_follow_to_the_end_and_resume(flow: tuple[ServerThread, Stubs]) -> None:
    _, stubs = flow
    task = stubs.train(epochs=2)
    first = stubs.tasks.Logs(task_service_pb2.LogsRequest(task_id=task.task_id), timeout=240)
    head = []
    for response in first:
        head.append(response.event)
        if len(head) == 3:
            break
    first.cancel()
    tail = stubs.events(task.task_id, from_seq=head[-1].seq + 1)
    late = stubs.events(task.task_id)
    assert [(e.seq, e.message) for e in head + tail] == [(e.seq, e.message) for e in late]
    assert late[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    assert [e.message for e in late if e.message.startswith("saved checkpoint")] == [
        "saved checkpoint epoch 1",
        "saved checkpoint epoch 2",
    ]


def test_cancel_queued_then_running(flow: tuple[ServerThread, Stubs]) -> None:
    _, stubs = flow
    limits(stubs, "node-1/cpu", training=1)
    try:
        busy = stubs.train(device="node-1/cpu", **LONG)
        stubs.wait_for(busy.task_id, running)
        queued = stubs.train(device="node-1/cpu", **LONG)
        waiting = stubs.get(queued.task_id)
        assert waiting.state == task_pb2.TASK_STATE_QUEUED
        assert waiting.waiting_reason == "1 of 1 node-1/cpu training slots busy"
        assert cancel(stubs, queued.task_id).state == task_pb2.TASK_STATE_CANCELLED

        stubs.wait_for(busy.task_id, progress)
        assert cancel(stubs, busy.task_id).state == task_pb2.TASK_STATE_RUNNING
        assert stubs.events(busy.task_id)[-1].state == task_pb2.TASK_STATE_CANCELLED
        assert "batch boundary" in stubs.get(busy.task_id).error
    finally:
        limits(stubs, "node-1/cpu", training=2)


def test_limits_hold_per_node(flow: tuple[ServerThread, Stubs]) -> None:
    _, stubs = flow
    limits(stubs, "node-1/cpu", training=1)
    limits(stubs, "node-2/cpu", training=0)
    tasks = [stubs.train(**LONG).task_id for _ in range(3)]
    try:
        stubs.wait_for(tasks[0], running)
        assert stubs.get(tasks[0]).assigned_device == "node-1/cpu"
        assert [stubs.get(t).state for t in tasks[1:]] == [task_pb2.TASK_STATE_QUEUED] * 2
        usage = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
        assert usage.device_usage["node-1/cpu"].training == 1
        assert usage.device_usage["node-2/cpu"].training == 0
        assert usage.device_usage["cpu"].training == 1

        limits(stubs, "node-2/cpu", training=1)  # one more slot, on the other node
        stubs.wait_for(tasks[1], running)
        assert stubs.get(tasks[1]).assigned_device == "node-2/cpu"
        assert stubs.get(tasks[2]).state == task_pb2.TASK_STATE_QUEUED
    finally:
        for task_id in tasks:
            cancel(stubs, task_id)
        for task_id in tasks:
            assert stubs.events(task_id)[-1].state == task_pb2.TASK_STATE_CANCELLED
        limits(stubs, "cpu", training=2)


def test_priority_2_overtakes_queued_priority_7(flow: tuple[ServerThread, Stubs]) -> None:
    _, stubs = flow
    limits(stubs, "cpu", training=0)  # every node's CPU: hold everything while it queues
    try:
        low = [stubs.train(priority=7).task_id for _ in range(3)]
        urgent = stubs.train(priority=2).task_id
        assert stubs.get(urgent).queue_position == 1
        assert [stubs.get(t).queue_position for t in low] == [2, 3, 4]
        limits(stubs, "node-1/cpu", training=1)
        for task_id in [urgent, *low]:
            assert stubs.events(task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    finally:
        limits(stubs, "cpu", training=2)
    tasks = sorted(
        (stubs.get(t) for t in [urgent, *low]), key=lambda t: t.start_time.ToNanoseconds()
    )
    assert [t.task_id for t in tasks] == [urgent, *low]
    assert {t.assigned_device for t in tasks} == {"node-1/cpu"}
    for before, after in itertools.pairwise(tasks):
        assert after.start_time.ToNanoseconds() >= before.end_time.ToNanoseconds()


def test_an_urgent_training_preempts_a_less_urgent_one_which_resumes_on_ray(
    flow: tuple[ServerThread, Stubs],
) -> None:
    _, stubs = flow
    limits(stubs, "node-1/cpu", training=1)
    limits(stubs, "node-2/cpu", training=0)
    try:
        low = stubs.train(priority=7, epochs=8, batch_size=8, val_split=0.25).task_id
        stubs.wait_for(low, progress)
        urgent = stubs.train(priority=2).task_id
        urgent_states = [e.state for e in stubs.events(urgent) if e.state]
        low_events = stubs.events(low)
    finally:
        limits(stubs, "cpu", training=2)
    assert urgent_states[-1] == task_pb2.TASK_STATE_SUCCEEDED
    assert [task_pb2.TaskState.Name(e.state) for e in low_events if e.state] == [
        "TASK_STATE_QUEUED",
        "TASK_STATE_RUNNING",
        "TASK_STATE_PREEMPTED",
        "TASK_STATE_QUEUED",
        "TASK_STATE_RUNNING",
        "TASK_STATE_SUCCEEDED",
    ]
    messages = [e.message for e in low_events]
    assert any(m.startswith(f"preempted by task {urgent} at epoch ") for m in messages)
    assert any(m.startswith("resumed at epoch ") for m in messages)
    assert stubs.get(low).preemptions == 1


def test_an_actor_that_dies_fails_only_its_task(flow: tuple[ServerThread, Stubs]) -> None:
    server, stubs = flow
    victim = stubs.train(**LONG)
    stubs.wait_for(victim.task_id, progress)
    assert server.service is not None
    executor = server.service.executor
    pid = server.call(lambda: executor.running()[victim.task_id])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    assert stubs.events(victim.task_id)[-1].state == task_pb2.TASK_STATE_FAILED
    error = stubs.get(victim.task_id).error
    assert error.startswith("the Ray actor running the task on node-1/cpu died")
    health = health_pb2_grpc.HealthStub(stubs.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    after = stubs.train()
    assert stubs.events(after.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED


def test_a_warm_actor_that_died_idle_is_replaced(flow: tuple[ServerThread, Stubs]) -> None:
    server, stubs = flow
    first = stubs.train(device="node-2/cpu").task_id
    stubs.wait_for(first, progress)
    assert server.service is not None
    executor = server.service.executor
    pid = server.call(lambda: executor.running()[first])
    assert pid is not None
    assert stubs.events(first)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    os.kill(pid, signal.SIGKILL)  # its actor, parked warm for the next task there

    second = stubs.train(device="node-2/cpu").task_id
    events = stubs.events(second)
    assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    requeued = [e.message for e in events if e.state == task_pb2.TASK_STATE_QUEUED][-1]
    assert requeued.startswith("the idle Ray actor for node-2/cpu was gone")
    assert requeued.endswith("; queued again")
