"""The Ray executor on its own, against the real two-node cluster: a job's events reach
the sink in order with nothing lost, on the event loop thread; a job that ignores a
cancel is killed after the grace period and ends CANCELLED; a served model answers from
bytes sent through Ray's object store, whatever the node's disk holds."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from ray import cloudpickle

from engines import zoo
from engines.artifacts import save_artifact
from engines.executor import JobOutcome, Outcome
from engines.jobs import JobError, JobEvent, JobResult, ServeJob, TrainingJob
from engines.protocol import JobCancelledMsg, JobDone, JobEventMsg, PredictBatch, PredictReply
from engines.ray_actor import DeviceActor, is_final
from engines.ray_cluster import RayCluster
from engines.ray_executor import RayExecutor
from scheduler.devices import split_node
from tests.ray.conftest import RayTestCluster

EVENTS = 5_000

# The actors below are defined here, not in an installed module: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class ChattyActor(DeviceActor):
    """Emits EVENTS numbered events as fast as it can, then succeeds."""

    def _run(self, job: object, model: bytes | None) -> None:
        assert isinstance(job, TrainingJob)
        mailbox = self._mailbox
        for i in range(EVENTS):
            mailbox.put(JobEventMsg(job.task_id, JobEvent(str(i))))
        mailbox.put(JobDone(job.task_id, JobResult({"events": float(EVENTS)})))


class StubbornActor(DeviceActor):
    """Says it started, then never looks at a cancel request."""

    def _run(self, job: object, model: bytes | None) -> None:
        assert isinstance(job, TrainingJob)
        self._mailbox.put(JobEventMsg(job.task_id, JobEvent("started")))
        while True:
            time.sleep(1)


class BrokenActor(DeviceActor):
    """Cannot start, as on a node whose set-up of Tandem is broken."""

    def __init__(self, node: str, device: str) -> None:
        raise RuntimeError(f"no Tandem set-up on {node}")


@dataclass
class RecordingSink:
    loop_thread: int
    events: dict[str, list[str]] = field(default_factory=dict)
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)
    replies: list[PredictReply] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    wrong_thread: int = 0

    def _check(self) -> None:
        if threading.get_ident() != self.loop_thread:
            self.wrong_thread += 1
        self.changed.set()

    def job_event(self, task_id: str, event: JobEvent) -> None:
        assert task_id not in self.outcomes, "an event after the job's end"
        self.events.setdefault(task_id, []).append(event.message)
        self._check()

    def job_finished(self, task_id: str, outcome: JobOutcome) -> None:
        assert task_id not in self.outcomes, "a job reported finished twice"
        self.outcomes[task_id] = outcome
        self._check()

    def job_reply(self, task_id: str, reply: PredictReply) -> None:
        self.replies.append(reply)
        self._check()

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(120):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class RecordingListener:
    """The executor's ClusterListener: remembers what it was told."""

    lost: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)

    def node_left(self, name: str, why: str) -> None:
        self.lost.append(name)

    def device_unusable(self, device: str, why: str) -> None:
        self.unusable.append(device)


def _job(task_id: str, device: str, tmp_path: Path) -> TrainingJob:
    return TrainingJob(
        task_id, "resnet18", "synthetic", 1, 8, 0.001, "adam", 32, 0, 0.2, device,
        str(tmp_path / "tasks" / task_id),
    )  # fmt: skip


async def _with_executor(
    ray_cluster: RayTestCluster,
    actor: type[DeviceActor],
    body: Callable[[RayExecutor], Awaitable[None]],
    listener: RecordingListener | None = None,
) -> None:
    cluster = RayCluster(ray_cluster.address)
    await asyncio.to_thread(cluster.connect)
    executor = RayExecutor(
        cluster,
        listener or RecordingListener(),
        split_node=split_node,
        prewarm=0,
        cancel_grace_s=1.0,
        actor_class=actor,
    )
    try:
        await executor.start()
        await body(executor)
    finally:
        await executor.close()
        await asyncio.to_thread(cluster.close)


def test_events_arrive_in_order_with_nothing_lost(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    async def body(executor: RayExecutor) -> None:
        sink = RecordingSink(threading.get_ident())
        for task_id, device in (("a", "node-1/cpu"), ("b", "node-2/cpu")):
            executor.submit(_job(task_id, device, tmp_path), sink)
        await sink.until(lambda: len(sink.outcomes) == 2)
        for task_id in ("a", "b"):
            assert sink.outcomes[task_id].outcome is Outcome.SUCCEEDED
            assert sink.events[task_id] == [str(i) for i in range(EVENTS)]
        assert sink.wrong_thread == 0  # every callback on the event loop's thread

    asyncio.run(_with_executor(ray_cluster, ChattyActor, body))


def test_a_job_that_ignores_cancel_is_killed_and_ends_cancelled(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    async def body(executor: RayExecutor) -> None:
        sink = RecordingSink(threading.get_ident())
        executor.submit(_job("stubborn", "node-2/cpu", tmp_path), sink)
        await sink.until(lambda: "stubborn" in sink.events)
        executor.cancel("stubborn")
        await sink.until(lambda: "stubborn" in sink.outcomes)
        outcome = sink.outcomes["stubborn"]
        assert outcome.outcome is Outcome.CANCELLED
        assert "did not stop within 1 s and was killed" in outcome.error

    asyncio.run(_with_executor(ray_cluster, StubbornActor, body))


def test_a_device_where_no_actor_starts_is_unusable_and_its_job_not_started(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    listener = RecordingListener()

    async def body(executor: RayExecutor) -> None:
        sink = RecordingSink(threading.get_ident())
        executor.submit(_job("nowhere", "node-2/cpu", tmp_path), sink)
        await sink.until(lambda: "nowhere" in sink.outcomes)
        outcome = sink.outcomes["nowhere"]
        assert outcome.not_started and not outcome.interrupted  # the server queues it again
        assert outcome.error.startswith("no Ray actor could start on node-2/cpu: ")
        assert "no Tandem set-up on node-2" in outcome.error
        assert listener.unusable == ["node-2/cpu"]

    asyncio.run(_with_executor(ray_cluster, BrokenActor, body, listener))


def _model_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "model.pt"
    model = zoo.build_model("resnet18", 2, 32)
    save_artifact(
        str(path), model=model, architecture="resnet18", classes=("a", "b"), image_size=32,
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), epoch=1, metrics={},
    )  # fmt: skip
    return path.read_bytes()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_served_model_needs_only_the_bytes_not_the_file(tmp_path: Path) -> None:
    # The actor's own code, in this process: the path names no file anywhere.
    actor = DeviceActor("node-9", "cpu")
    actor.start(ServeJob("serve-1", "/elsewhere/model.pt", "cpu"), _model_bytes(tmp_path))
    reply = actor.predict(PredictBatch("serve-1", 1, [_png(), b"not an image"], top_k=1))
    assert reply.batch_id == 1
    first, second = reply.results
    assert isinstance(first, list) and first[0].label in ("a", "b")
    assert isinstance(second, str)  # an unreadable image is answered with why
    actor.cancel("serve-1")
    messages: list[object] = []
    after = 0
    while not messages or not is_final(messages[-1]):  # type: ignore[arg-type]
        batch = actor.poll("serve-1", after, wait_s=30)
        messages += [message for _, message in batch]
        after = batch[-1][0] if batch else after
    first, last = messages[0], messages[-1]
    assert isinstance(first, JobEventMsg)
    assert first.event.message == (
        "serving /elsewhere/model.pt on node-9/cpu "
        "(batch norm folded into convolutions and channels-last)"
    )
    assert isinstance(last, JobCancelledMsg)
    # Parked, the actor holds the model no more.
    with pytest.raises(JobError, match="holds no model for serve-1"):
        actor.predict(PredictBatch("serve-1", 2, [_png()], top_k=1))


def test_a_cancel_that_overtakes_its_start_ends_the_job_at_once(tmp_path: Path) -> None:
    # The actor's own code, in this process: Ray may deliver the two calls in any order.
    actor = DeviceActor("node-9", "cpu")
    actor.cancel("early")
    actor.start(_job("early", "cpu", tmp_path))
    assert actor.poll("early", 0, wait_s=30) == [(1, JobCancelledMsg("early"))]
