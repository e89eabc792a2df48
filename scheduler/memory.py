"""GPU memory: how much a task will need, and whether a GPU has room for it now.

`MemoryEstimates` knows a task's expected peak: the peak measured by earlier runs of
the same shape (model, batch size, image size, kind, precision), which workers report from
`torch.cuda.max_memory_allocated`, or else a conservative formula from the model's
parameter count. `MemoryGate` is the arbiter's `AdmissionGate` for GPUs: a GPU task is
admitted only if the estimate fits in what is free.

What "free" means, and why: NVML's free memory sees every process (ours and others)
but not the tasks we admitted a moment ago that have not allocated yet; our own
reservations see those but not other processes. A GPU has room for `need` bytes when
both views agree: `min(nvml_free, total - reserved) - headroom >= need`. The sum of
the estimates of admitted tasks therefore never exceeds `total - headroom`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scheduler.devices import is_gpu, split_node
from scheduler.inventory import DeviceInventory, GpuInfo
from scheduler.types import Admission, Kind, Request

GIB = 1024**3
# The CUDA context and allocator slack that max_memory_allocated does not count.
CONTEXT_BYTES = 512 * 1024**2
# Measured peaks vary a little from run to run (allocator, cudnn algorithm choice).
MEASURED_MARGIN = 1.15
# Bytes of kept activations per input byte, per kind: a rough upper bound for CNNs at
# common sizes (training keeps every layer's activations for backward).
_ACTIVATION_FACTOR = {Kind.TRAINING: 100, Kind.INFERENCE: 12}
# Copies of the weights a task holds: training adds gradients and two optimiser moments.
_WEIGHT_COPIES = {Kind.TRAINING: 4, Kind.INFERENCE: 1}


@dataclass(frozen=True)
class Shape:
    """What a task's memory use depends on."""

    model: str
    batch_size: int
    image_size: int
    kind: Kind
    # "fp32", "bf16", "fp16" or "auto" as asked: 16-bit autocast keeps activations at
    # half the size, so each learns its own peak.
    precision: str = "fp32"


def conservative_estimate(shape: Shape, param_count: int) -> int:
    """Peak bytes for a shape never run before: weights (with gradients and optimiser
    state when training), activations, and the CUDA context."""
    weights = param_count * 4 * _WEIGHT_COPIES[shape.kind]
    input_bytes = shape.batch_size * 3 * shape.image_size**2 * 4
    activations = input_bytes * _ACTIVATION_FACTOR[shape.kind]
    if shape.precision != "fp32":
        # Autocast keeps most activations in 16 bits; the weights (and their gradients
        # and optimiser state) stay fp32. "auto" is 16-bit on every GPU.
        activations //= 2
    return CONTEXT_BYTES + weights + activations


class MemoryEstimates:
    """Peak memory per shape: measured when a run of it has reported one."""

    def __init__(self, measured: Mapping[Shape, int] | None = None) -> None:
        self._measured: dict[Shape, int] = dict(measured or {})

    def estimate(self, shape: Shape, param_count: int) -> int:
        measured = self._measured.get(shape)
        if measured is None:
            return conservative_estimate(shape, param_count)
        return int(measured * MEASURED_MARGIN) + CONTEXT_BYTES

    def measured(self, shape: Shape) -> int | None:
        return self._measured.get(shape)

    def record(self, shape: Shape, peak_bytes: int) -> None:
        """A run of `shape` peaked at `peak_bytes`. The largest peak seen is kept: an
        estimate that is too low costs an out-of-memory failure, one too high only waiting."""
        if peak_bytes > 0:
            self._measured[shape] = max(peak_bytes, self._measured.get(shape, 0))

    def raise_to(self, shape: Shape, at_least: int) -> None:
        """After an out-of-memory failure: never estimate below `at_least` again."""
        self._measured[shape] = max(at_least, self._measured.get(shape, 0))

    def items(self) -> Mapping[Shape, int]:
        return dict(self._measured)


def gpu_index(device: str) -> int | None:
    """N for "cuda:N", None for anything else."""
    prefix, _, index = device.partition(":")
    return int(index) if prefix == "cuda" and index.isdigit() else None


def gb(value: float) -> str:
    return f"{value / GIB:.1f} GB"


class MemoryGate:
    """Admits a GPU task only where its estimated peak fits; the CPU is not gated."""

    def __init__(self, inventory: DeviceInventory, *, headroom_bytes: int = GIB // 2) -> None:
        self._inventory = inventory
        self._headroom = headroom_bytes
        self._reserved: dict[str, int] = {}
        self._jobs: dict[str, tuple[str, int]] = {}

    def _reading(self, device: str) -> GpuInfo | None:
        """A current reading of the GPU the arbiter calls `device`; None for a CPU."""
        node, local = split_node(device)
        index = gpu_index(local)
        if index is None:
            return None
        if not node:
            return self._inventory.memory(index)
        for gpu in self._inventory.gpus():
            if gpu.device == device:
                return gpu
        # A GPU whose node has just left the cluster: nothing fits on it.
        return GpuInfo(index, "gone", 0, 0, 0, node=node)

    def available(self, device: str) -> float:
        """Bytes a new task may still use on `device` (may be negative); inf for the CPU."""
        return self._room(device, freed=0)

    def _room(self, device: str, *, freed: int) -> float:
        """`available`, as it would be once jobs holding `freed` reserved bytes on
        `device` have ended: both views (NVML's and ours) get those bytes back."""
        info = self._reading(device)
        if info is None:
            return math.inf
        reserved = self._reserved.get(device, 0) - freed
        return min(info.free_bytes + freed, info.total_bytes - reserved) - self._headroom

    def capacity(self, device: str) -> float:
        """The most a single task could ever get on `device`: total minus headroom."""
        info = self._reading(device)
        if info is None:
            return math.inf
        return info.total_bytes - self._headroom

    def reserved(self, device: str) -> int:
        return self._reserved.get(device, 0)

    # -- AdmissionGate -----------------------------------------------------------------

    def fits(self, request: Request, device: str) -> bool:
        if not is_gpu(device):
            return True
        return request.memory_bytes <= self.available(device)

    def fits_after(self, request: Request, device: str, released: Sequence[Admission]) -> bool:
        if not is_gpu(device):
            return True
        freed = 0
        for admission in released:
            entry = self._jobs.get(admission.job_id)
            if entry is not None and entry[0] == device:
                freed += entry[1]
        return request.memory_bytes <= self._room(device, freed=freed)

    def admitted(self, request: Request, device: str) -> None:
        if not is_gpu(device) or request.memory_bytes <= 0:
            return
        self._reserved[device] = self._reserved.get(device, 0) + request.memory_bytes
        self._jobs[request.job_id] = (device, request.memory_bytes)

    def released(self, admission: Admission) -> None:
        entry = self._jobs.pop(admission.job_id, None)
        if entry is not None:
            device, size = entry
            self._reserved[device] = max(0, self._reserved.get(device, 0) - size)

    def rank(self, request: Request, devices: Sequence[str]) -> Sequence[str]:
        # "cuda" means any GPU: the one with the most room first (stable for ties).
        return sorted(devices, key=lambda d: -self.available(d))

    def explain(self, request: Request, device: str) -> str:
        free = max(0.0, self.available(device))
        return f"needs ~{gb(request.memory_bytes)} on {device}, {gb(free)} free"
