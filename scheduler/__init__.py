"""Tandem's scheduler: who runs where, and when.

- `Arbiter` (arbiter.py): priority admission into one slot pool per (device, kind),
  with aging, no barging, run-time limits and preemption planning. The waiting
  line's data structure and why it stays fast with aging: _pool.py; how victims are
  chosen: _preempt.py.
- values (types.py): `Kind`, `Limits` and the defaults, priorities, `Request`,
  `Admission`, `PreemptionPlan`, snapshots, and the `AdmissionGate` seam for
  memory-aware admission.
- devices.py: "cpu" / "cuda" / "cuda:N" / "auto" -> concrete candidate devices, on one
  machine or across a cluster's nodes ("node-1/cpu").
- inventory.py: the machine's GPUs and their memory (NVML), behind a Protocol.

Pure Python: no torch, no grpc, no asyncio. The server calls it from one thread.
"""

from scheduler.arbiter import Arbiter
from scheduler.devices import (
    CPU,
    DeviceError,
    DeviceUnavailable,
    InvalidDevice,
    default_limits,
    device_group,
    gpu_device,
    gpu_devices,
    is_gpu,
    on_node,
    resolve_among,
    resolve_candidates,
    split_node,
)
from scheduler.inventory import DeviceInventory, GpuInfo, NvmlInventory, StaticInventory
from scheduler.types import (
    DEFAULT_CPU_LIMITS,
    DEFAULT_GPU_LIMITS,
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Admission,
    AdmissionGate,
    ArbiterStatistics,
    Kind,
    Limits,
    PoolStatistics,
    PreemptionPlan,
    QueueFull,
    Request,
    WaitingInfo,
    check_priority,
)

__all__ = [
    "CPU",
    "DEFAULT_CPU_LIMITS",
    "DEFAULT_GPU_LIMITS",
    "DEFAULT_PRIORITY",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Admission",
    "AdmissionGate",
    "Arbiter",
    "ArbiterStatistics",
    "DeviceError",
    "DeviceInventory",
    "DeviceUnavailable",
    "GpuInfo",
    "InvalidDevice",
    "Kind",
    "Limits",
    "NvmlInventory",
    "PoolStatistics",
    "PreemptionPlan",
    "QueueFull",
    "Request",
    "StaticInventory",
    "WaitingInfo",
    "check_priority",
    "default_limits",
    "device_group",
    "gpu_device",
    "gpu_devices",
    "is_gpu",
    "on_node",
    "resolve_among",
    "resolve_candidates",
    "split_node",
]
