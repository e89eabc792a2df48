"""A data dir that fills up while tasks run: the running task is FAILED with the reason,
new submits get RESOURCE_EXHAUSTED, the server stays up, and it works again once space
is freed. The disk is a real, small tmpfs (mounting one needs root, as in CI)."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from server.records import TaskState
from server.store import TaskStore
from tandem.v1 import (
    resource_service_pb2,
    task_pb2,
    task_service_pb2,
)
from tests.conftest import Stubs, make_config, no_gpus
from tests.harness.threaded import ServerThread

TERMINAL = (
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Writes a file until the file system has no space left; returns it."""
    filler = folder / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_data_dir_fails_tasks_with_the_reason_and_the_server_stays_up(
    small_disk: Path,
) -> None:
    server = ServerThread(make_config(small_disk, prewarm_workers=0), no_gpus()).start()
    stubs = Stubs.connect(server.port)
    try:
        running = stubs.train(epochs=1000)  # runs until the disk stops it
        stubs.wait_for(running.task_id, lambda e: e.type == task_pb2.EVENT_TYPE_METRICS)

        filler = fill(small_disk)
        ended = stubs.wait_for(running.task_id, lambda e: e.state in TERMINAL)
        assert ended.state == task_pb2.TASK_STATE_FAILED
        failed = stubs.get(running.task_id)
        assert failed.state == task_pb2.TASK_STATE_FAILED, failed
        assert "no space left on device" in failed.error.lower() or "full" in failed.error

        with pytest.raises(grpc.RpcError) as refused:
            stubs.train()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "cannot accept tasks" in (refused.value.details() or "")
        stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest(), timeout=30)

        filler.unlink()
        again = stubs.train(epochs=1000)
        assert again.state == task_pb2.TASK_STATE_QUEUED
        stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=again.task_id))
        assert stubs.wait_for(again.task_id, lambda e: e.state in TERMINAL).state == (
            task_pb2.TASK_STATE_CANCELLED
        )
        # What could not be saved while the disk was full is in the database now (the
        # periodic pass retries; read the file itself, not the server's memory).
        assert stubs.get(running.task_id).state == task_pb2.TASK_STATE_FAILED
        server.stop()
        stored = TaskStore(small_disk / "data" / "tandem.db").get(running.task_id)
        assert stored is not None and stored.state is TaskState.FAILED
        assert "cannot be written" in stored.error or "space" in stored.error
    finally:
        stubs.channel.close()
        with contextlib.suppress(Exception):
            server.stop()
