"""Training end to end through gRPC: a real task in a real worker, followed live."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from engines.artifacts import load_artifact
from tandem.v1 import task_pb2, task_service_pb2
from tests.conftest import Stubs


def test_train_mobilenet_on_synthetic_to_success(stubs: Stubs) -> None:
    task = stubs.train(epochs=2, request_id="")
    assert task.state == task_pb2.TASK_STATE_QUEUED
    assert task.training.model == "mobilenet_v3_small"
    assert task.training.learning_rate > 0  # defaults are filled in and shown

    events = stubs.events(task.task_id)

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    states = [e.state for e in events if e.type == task_pb2.EVENT_TYPE_STATE]
    assert states == [
        task_pb2.TASK_STATE_QUEUED,
        task_pb2.TASK_STATE_RUNNING,
        task_pb2.TASK_STATE_SUCCEEDED,
    ]
    assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    epoch_ends = [e for e in events if "val_accuracy" in e.metrics]
    assert [e.metrics["epoch"] for e in epoch_ends] == [1.0, 2.0]
    assert all(e.metrics["images_per_sec"] > 0 for e in epoch_ends)

    done = stubs.get(task.task_id)
    assert done.state == task_pb2.TASK_STATE_SUCCEEDED
    assert done.assigned_device == "cpu"
    assert done.end_time.ToNanoseconds() >= done.start_time.ToNanoseconds() > 0
    assert done.metrics["progress"] == 1.0
    assert done.last_seq == events[-1].seq

    checkpoints = sorted(p.name for p in (Path(done.model_path).parent / "checkpoints").iterdir())
    assert checkpoints == ["epoch_1.pt", "epoch_2.pt"]
    artifact = load_artifact(done.model_path)
    assert artifact.architecture == "mobilenet_v3_small"
    model = artifact.build_model()
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, artifact.image_size, artifact.image_size))
    assert logits.shape == (1, len(artifact.classes))


def test_late_subscriber_and_resume_see_the_same_log(stubs: Stubs) -> None:
    task = stubs.train(epochs=2)
    # A follower that drops its stream after three events, then resumes from there.
    first = stubs.tasks.Logs(task_service_pb2.LogsRequest(task_id=task.task_id), timeout=240)
    head = []
    for response in first:
        head.append(response.event)
        if len(head) == 3:
            break
    first.cancel()
    tail = stubs.events(task.task_id, from_seq=head[-1].seq + 1)
    resumed = head + tail

    late = stubs.events(task.task_id)  # after the end: the whole history from the file
    assert [e.seq for e in resumed] == list(range(1, len(late) + 1))
    assert [(e.seq, e.message) for e in resumed] == [(e.seq, e.message) for e in late]
    assert late[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    assert [e.seq for e in stubs.events(task.task_id, from_seq=4)] == [e.seq for e in late[3:]]
    history = stubs.events(task.task_id, follow=False)
    assert [e.seq for e in history] == [e.seq for e in late]


def test_many_concurrent_followers_each_get_every_event(stubs: Stubs) -> None:
    task = stubs.train(epochs=1)
    results: list[list[int]] = []
    lock = threading.Lock()

    def follow() -> None:
        seqs = [e.seq for e in stubs.events(task.task_id)]
        with lock:
            results.append(seqs)

    threads = [threading.Thread(target=follow) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = stubs.get(task.task_id)
    assert final.state == task_pb2.TASK_STATE_SUCCEEDED
    assert results == [list(range(1, final.last_seq + 1))] * 8


def test_request_id_makes_submit_idempotent(stubs: Stubs) -> None:
    first = stubs.train(request_id="retry-me-1", epochs=1)
    again = stubs.train(request_id="retry-me-1", epochs=1)
    assert again.task_id == first.task_id
    assert again.request_id == "retry-me-1"
    stubs.events(first.task_id)


def test_list_tasks_filters_and_pages(stubs: Stubs) -> None:
    submitted = [stubs.train(epochs=1).task_id for _ in range(3)]
    for task_id in submitted:
        stubs.events(task_id)
    listed = stubs.tasks.ListTasks(
        task_service_pb2.ListTasksRequest(
            states=[task_pb2.TASK_STATE_SUCCEEDED], kind=task_pb2.TASK_KIND_TRAINING, page_size=2
        )
    )
    assert len(listed.tasks) == 2
    assert all(t.state == task_pb2.TASK_STATE_SUCCEEDED for t in listed.tasks)
    assert listed.total_size >= 3
    # Newest first, and the next page continues without overlap.
    times = [t.create_time.ToNanoseconds() for t in listed.tasks]
    assert times == sorted(times, reverse=True)
    nxt = stubs.tasks.ListTasks(
        task_service_pb2.ListTasksRequest(
            states=[task_pb2.TASK_STATE_SUCCEEDED], page_size=2, page_token=listed.next_page_token
        )
    )
    assert not {t.task_id for t in nxt.tasks} & {t.task_id for t in listed.tasks}
    assert listed.tasks[0].task_id == submitted[-1]
    none = stubs.tasks.ListTasks(
        task_service_pb2.ListTasksRequest(states=[task_pb2.TASK_STATE_PREEMPTED])
    )
    assert list(none.tasks) == [] and none.total_size == 0
