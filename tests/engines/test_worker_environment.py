"""A worker's environment: CUDA numbers GPUs by PCI bus there, as the inventory does."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from engines.process import WORKER_CUDA_ENV, WorkerProcess
from engines.protocol import WorkerReady


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/environ")
def test_a_worker_numbers_gpus_by_pci_bus_whatever_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")  # the server's own: overridden
    worker = WorkerProcess("cpu", environment={"CUDA_DEVICE_ORDER": "FASTEST_FIRST", "X": "1"})
    worker.start()
    try:
        assert worker.pid is not None and worker.conn is not None
        # Read once the worker says it is up: between its fork and its exec, /proc shows
        # the environment the parent process started with, not the one it was given.
        assert worker.conn.poll(120), "the worker did not start"
        assert isinstance(worker.conn.recv(), WorkerReady)
        raw = Path(f"/proc/{worker.pid}/environ").read_bytes()
        environ = dict(entry.split("=", 1) for entry in raw.decode().split("\0") if entry)
    finally:
        asyncio.run(worker.close(grace_s=5.0))
    assert environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" == WORKER_CUDA_ENV["CUDA_DEVICE_ORDER"]
    assert environ["X"] == "1"
    assert os.environ["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"  # the parent's is left as found
