"""Torch devices for jobs: checking the one a job was given, and recovering after an
out-of-memory error so the worker can run its next job."""

from __future__ import annotations

import gc
import os

import torch

from engines.jobs import JobError

# A test seam at the CUDA boundary: in a worker whose environment sets it to "1", a job
# sent to a GPU computes on the CPU. Tests that make GPUs up at the NVML boundary (their
# memory, for admission and preemption) set it so that the jobs admitted there run; it
# is never set outside tests, and the server does not read it.
SIMULATED_CUDA_ENV = "TANDEM_TEST_SIMULATED_CUDA"


def resolve_device(spec: str) -> torch.device:
    """`spec` ("cpu", "cuda", "cuda:N") as a device this machine has; JobError if not."""
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise JobError(f"unknown device {spec!r}; expected cpu or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise JobError(f"device {spec} is not supported; expected cpu or cuda:N")
    if os.environ.get(SIMULATED_CUDA_ENV) == "1":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise JobError(f"device {spec} was requested but this machine has no usable CUDA GPU")
    index = torch.cuda.current_device() if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise JobError(f"device cuda:{index} does not exist; this machine has {count} GPU(s)")
    # Calls without an explicit device (cuDNN handles, pinned-memory copies) use this one.
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def free_after_oom() -> None:
    """Returns the memory of a job that ran out of it to the GPU. Call it after leaving
    the `except` block: until then the traceback's frames still hold the job's tensors."""
    gc.collect()
    torch.cuda.empty_cache()
