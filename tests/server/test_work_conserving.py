"""Work-conserving threads with real workers: the CPU threads training tasks run on,
as they report them, follow the tasks running beside them."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from server.backends import local_cores, worker_environment
from server.config import load
from tandem.v1 import task_pb2, task_service_pb2
from tests.conftest import Stubs
from tests.harness.threaded import ServerThread

CORES = local_cores("cpu")


def _threads(event: Any) -> int | None:
    """The thread count an event reports (progress, epoch end, or a change); None if none."""
    return int(event.metrics["threads"]) if "threads" in event.metrics else None


def _long_training(stubs: Stubs) -> Any:
    # Tiny batches of a tiny model: many batch boundaries a second, for hours.
    return stubs.train(model="squeezenet1_1", image_size=32, batch_size=4, epochs=1000)


def test_training_threads_follow_the_jobs_beside_it(
    fresh_server: Callable[..., ServerThread],
) -> None:
    if CORES < 2:
        pytest.skip("sharing needs at least 2 cores")
    server = fresh_server(prewarm_workers=2)
    service = server.service
    assert service is not None
    stubs = Stubs.connect(server.port)

    def given() -> dict[str, int]:
        return server.call(service.threads.snapshot)

    first = _long_training(stubs)
    # Alone, it runs on every core.
    assert _threads(stubs.wait_for(first.task_id, lambda e: _threads(e) is not None)) == CORES
    assert given() == {first.task_id: CORES}

    second = _long_training(stubs)
    half = CORES // 2
    seen = stubs.wait_for(second.task_id, lambda e: _threads(e) is not None)
    assert _threads(seen) == half
    # The first takes up its smaller share at a batch boundary, and says so (the first
    # to start keeps an odd core).
    changed = stubs.wait_for(first.task_id, lambda e: "now on" in e.message)
    assert _threads(changed) == CORES - half
    assert sorted(given().values()) == sorted([half, CORES - half])
    assert sum(given().values()) == CORES

    stubs.tasks.CancelTask(_cancel(second.task_id))
    stubs.wait_for(second.task_id, lambda e: e.state == task_pb2.TASK_STATE_CANCELLED)
    # Alone again: every core, from its next batch on.
    back = stubs.wait_for(first.task_id, lambda e: "now on" in e.message and _threads(e) == CORES)
    assert _threads(back) == CORES
    assert given() == {first.task_id: CORES}
    stubs.tasks.CancelTask(_cancel(first.task_id))
    stubs.wait_for(first.task_id, lambda e: e.state == task_pb2.TASK_STATE_CANCELLED)
    assert given() == {}
    stubs.channel.close()


def _cancel(task_id: str) -> task_service_pb2.CancelTaskRequest:
    return task_service_pb2.CancelTaskRequest(task_id=task_id)


def test_the_worker_environment_carries_the_omp_wait_policy() -> None:
    config = load(data_dir=os.devnull, env={"TANDEM_OMP_WAIT_POLICY": "Passive"})
    assert worker_environment(config) == {"OMP_WAIT_POLICY": "PASSIVE"}
    with pytest.raises(ValueError, match="TANDEM_OMP_WAIT_POLICY"):
        load(data_dir=os.devnull, env={"TANDEM_OMP_WAIT_POLICY": "spin"})
