"""A hard kill, as an operator would do it: SIGKILL of `tandem serve` with training
running, inference running and work queued, then a restart on the same data dir.
Nothing accepted is lost: the workers die with the server, the running training
resumes from its checkpoint, and everything queued runs in priority order."""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

from tandem import Client
from tandem.v1 import task_pb2
from tests.harness.served import ServedProcess, children

SMALL = {"device": "cpu", "image_size": 16, "batch_size": 32}


def wait_until_exited(pids: list[int], timeout_s: float) -> list[int]:
    """Waits for each process to exit (a pidfd becomes readable); returns survivors."""
    survivors = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # already gone
        try:
            ready, _, _ = select.select([fd], [], [], timeout_s)
            if not ready:
                survivors.append(pid)
        finally:
            os.close(fd)
    return survivors


def test_sigkill_with_work_running_and_queued_loses_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = ServedProcess(data_dir, new_session=True)
    try:
        with Client(first.grpc_address) as client:
            model = client.train("mobilenet_v3_small", "synthetic", epochs=1, **SMALL)
            assert list(client.logs(model.task_id))[-1].state == task_pb2.TASK_STATE_SUCCEEDED
            client.update_limits({"cpu": {"training": 1}})
            running = client.train("mobilenet_v3_small", "synthetic", epochs=4, **SMALL)
            for event in client.logs(running.task_id):
                if event.message == "saved checkpoint epoch 1":
                    break
            low = client.train("mobilenet_v3_small", "synthetic", epochs=1, priority=7, **SMALL)
            high = client.train("mobilenet_v3_small", "synthetic", epochs=1, priority=2, **SMALL)
            inference = client.infer("synthetic", task_id=model.task_id, device="cpu")
            assert client.get_task(low.task_id).state == task_pb2.TASK_STATE_QUEUED
            assert client.get_task(high.task_id).state == task_pb2.TASK_STATE_QUEUED
        workers = children(first.pid)
        assert workers, "the server has no worker processes"

        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=30)
        # The workers die with the server: none trains on into a resumed task.
        assert wait_until_exited(workers, timeout_s=30) == []
    finally:
        first.kill()

    second = ServedProcess(data_dir, new_session=True)
    try:
        with Client(second.grpc_address) as client:
            accepted = [model, running, low, high, inference]
            listed = {t.task_id for t in client.list_tasks(page_size=100)}
            assert {t.task_id for t in accepted} <= listed  # none is missing
            ends = {t.task_id: list(client.logs(t.task_id))[-1] for t in accepted}
            assert all(e.state == task_pb2.TASK_STATE_SUCCEEDED for e in ends.values()), ends

            resumed = [m.message for m in client.logs(running.task_id)]
            assert any(m.startswith("resumed from epoch ") for m in resumed), resumed
            seqs = [e.seq for e in client.logs(running.task_id)]
            assert seqs == list(range(1, len(seqs) + 1))  # one log, no gap, no repeat
            # The limit of 1 and the priorities held after the restart.
            high_start = client.get_task(high.task_id).start_time.ToNanoseconds()
            assert high_start < client.get_task(low.task_id).start_time.ToNanoseconds()
    finally:
        second.stop()
