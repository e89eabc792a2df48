"""Preemption end to end on the CPU, through a real server and real workers: a more
urgent training takes the one training slot from a less urgent one, which saves its
whole state at a batch boundary, waits (PREEMPTED, then QUEUED) and resumes where it
stopped; one that opted out is never preempted. The arbiter's choice of victims is
tested in tests/scheduler/test_preemption.py, the exactness of the resume in
tests/engines/test_training_preemption.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tandem.v1 import resource_service_pb2, resources_pb2, task_pb2
from tests.conftest import ServerThread, Stubs

# Long enough (8 epochs of 12 batches) that the urgent task, submitted once the first
# progress event (at most the end of epoch 1) is out, is queued while it runs on any
# machine: it is preempted within a batch of that.
LONG = {"epochs": 8, "batch_size": 8, "val_split": 0.25}
STATE = task_pb2.TaskState


def _one_training_slot(stubs: Stubs) -> None:
    limits = resources_pb2.ConcurrencyLimits(training=1, inference=4)
    stubs.resources.UpdateLimits(
        resource_service_pb2.UpdateLimitsRequest(max_concurrent={"cpu": limits}), timeout=30
    )


def _in_batch_loop(event: Any) -> bool:
    return "batch" in event.metrics


def _states(events: list[Any]) -> list[str]:
    return [STATE.Name(e.state).removeprefix("TASK_STATE_") for e in events if e.state]


def _time(event: Any) -> int:
    return int(event.time.ToNanoseconds())


def test_an_urgent_training_preempts_a_less_urgent_one_which_resumes_where_it_stopped(
    fresh_server: Callable[..., ServerThread],
) -> None:
    server = fresh_server(preempt_min_runtime_s=0.0)
    stubs = Stubs.connect(server.port)
    _one_training_slot(stubs)
    low = stubs.train(priority=7, **LONG)
    stubs.wait_for(low.task_id, _in_batch_loop)
    urgent = stubs.train(priority=2)

    urgent_events = stubs.events(urgent.task_id)
    low_events = stubs.events(low.task_id)

    assert _states(urgent_events)[-1] == "SUCCEEDED"
    assert _states(low_events) == [
        "QUEUED",
        "RUNNING",
        "PREEMPTED",
        "QUEUED",
        "RUNNING",
        "SUCCEEDED",
    ]
    messages = [e.message for e in low_events]
    preempted = next(e for e in low_events if e.state == STATE.Value("TASK_STATE_PREEMPTED"))
    assert preempted.message.startswith(f"preempted by task {urgent.task_id} at epoch ")
    assert any(m.startswith(f"preempted by task {urgent.task_id} (priority 2)") for m in messages)
    assert any(m.startswith("resumed at epoch ") for m in messages)
    assert any(
        m.startswith(f"preempting task {low.task_id} on cpu")
        for m in (e.message for e in urgent_events)
    )
    # The urgent task ran in the room the preempted one left, and ended before it resumed.
    urgent_running = next(e for e in urgent_events if e.state == STATE.Value("TASK_STATE_RUNNING"))
    resumed_running = [e for e in low_events if e.state == STATE.Value("TASK_STATE_RUNNING")][1]
    assert _time(preempted) <= _time(urgent_running) <= _time(resumed_running)
    assert _time(urgent_events[-1]) <= _time(resumed_running)

    assert stubs.get(low.task_id).preemptions == 1
    assert stubs.get(urgent.task_id).preemptions == 0
    resources = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    assert resources.preemptions_total == 1
    assert server.service is not None
    exposition = server.service.metrics.render().decode()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    assert samples["tandem_preemptions_total"] == 1
    stubs.channel.close()


def test_a_training_that_opted_out_is_never_preempted(
    fresh_server: Callable[..., ServerThread],
) -> None:
    server = fresh_server(preempt_min_runtime_s=0.0)
    stubs = Stubs.connect(server.port)
    _one_training_slot(stubs)
    low = stubs.train(priority=7, preemptible=False, **{**LONG, "epochs": 4})
    stubs.wait_for(low.task_id, _in_batch_loop)
    urgent = stubs.train(priority=2)
    queued = stubs.get(urgent.task_id)
    assert queued.state == STATE.Value("TASK_STATE_QUEUED")
    assert "preempt" not in queued.waiting_reason

    low_events = stubs.events(low.task_id)
    urgent_events = stubs.events(urgent.task_id)
    assert _states(low_events) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert _states(urgent_events)[-1] == "SUCCEEDED"
    urgent_running = next(e for e in urgent_events if e.state == STATE.Value("TASK_STATE_RUNNING"))
    assert _time(low_events[-1]) <= _time(urgent_running)  # it waited for the slot
    assert stubs.get(low.task_id).preemptions == 0
    assert stubs.get(low.task_id).training.preemptible is False
    stubs.channel.close()
