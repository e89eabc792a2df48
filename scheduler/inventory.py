"""Which GPUs this machine has and how much memory each has free.

`DeviceInventory` is the seam; `NvmlInventory` reads NVIDIA's management library
(the `pynvml` module of nvidia-ml-py), which needs no CUDA context and no torch, so
the server can ask from its own process without touching the GPUs. On a machine
without a GPU or driver NVML fails to start: that means "no GPUs", logged once, never
a crash. `StaticInventory` is the honest stand-in at that boundary, for tests and for
dev runs with made-up GPUs.

GPU N of the inventory is CUDA's `cuda:N` in a worker: workers run with
`CUDA_DEVICE_ORDER=PCI_BUS_ID` (`WORKER_CUDA_ENV` in engines/process.py), so CUDA numbers
the GPUs that `CUDA_VISIBLE_DEVICES` leaves visible in PCI bus order, while NVML lists
every GPU in its own order. `NvmlInventory` matches the two by UUID and bus id
(`cuda_order`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol, Self

import pynvml

from scheduler.devices import gpu_device, on_node

__all__ = [
    "DeviceInventory",
    "GpuInfo",
    "Nvml",
    "NvmlGpu",
    "NvmlInventory",
    "StaticInventory",
    "cuda_order",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU's memory at the moment it was read, in bytes."""

    index: int
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    # The cluster node the GPU is on ("node-2"); empty for this machine's own GPUs.
    node: str = ""
    # NVML's "GPU-..." UUID, where known (empty for made-up and cluster GPUs).
    uuid: str = ""

    @property
    def device(self) -> str:
        """The arbiter's name for this GPU: "cuda:N", or "node-2/cuda:N" on a cluster."""
        local = gpu_device(self.index)
        return on_node(self.node, local) if self.node else local

    @property
    def key(self) -> str:
        """Its key in the seed's `gpu_memory_info`: "GPU_N", or "node-2/GPU_N" on a cluster."""
        local = f"GPU_{self.index}"
        return on_node(self.node, local) if self.node else local


class DeviceInventory(Protocol):
    """Reads the machine's GPUs. Every call reads afresh; nothing is cached for long."""

    def gpu_count(self) -> int:
        """How many GPUs there are; fixed for the inventory's life."""
        ...

    def gpus(self) -> list[GpuInfo]:
        """Every GPU, in index order, with current memory readings."""
        ...

    def memory(self, index: int) -> GpuInfo:
        """A current reading of GPU `index`; IndexError if there is no such GPU."""
        ...


# NVML problems worth one warning each per process, not one per reading: the server
# reads memory on every Resources call.
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: object) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message, *args)


class Nvml(Protocol):
    """The NVML calls the inventory makes, named as in `pynvml`, which is the real one;
    tests pass a fake. Each may raise `pynvml.NVMLError`."""

    def nvmlInit(self) -> None: ...

    def nvmlShutdown(self) -> None: ...

    def nvmlDeviceGetCount(self) -> int: ...

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...

    def nvmlDeviceGetName(self, handle: Any) -> Any:
        """str, or bytes from older bindings."""
        ...

    def nvmlDeviceGetUUID(self, handle: Any) -> Any:
        """ "GPU-<hex>", as str or bytes."""
        ...

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        """Has `.busId`: "00000000:3B:00.0", as str or bytes."""
        ...

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        """Has `.total`, `.used` and `.free`, in bytes."""
        ...


@dataclass(frozen=True)
class NvmlGpu:
    """One GPU as NVML lists it, before CUDA's numbering is applied."""

    uuid: str
    bus_id: str  # "00000000:3B:00.0"
    handle: Any = None

    @property
    def bus_key(self) -> tuple[int, ...]:
        """The PCI address as numbers (domain, bus, device, function): CUDA's
        PCI_BUS_ID order. An address that does not parse sorts last."""
        try:
            domain, bus, slot = self.bus_id.strip().split(":")
            device, _, function = slot.partition(".")
            return (int(domain, 16), int(bus, 16), int(device, 16), int(function or "0", 16))
        except ValueError:
            return (2**32,)


def cuda_order(gpus: Sequence[NvmlGpu], visible_devices: str | None) -> list[NvmlGpu]:
    """The GPUs a worker's CUDA sees, in the order it numbers them (`cuda:0` first),
    given `CUDA_VISIBLE_DEVICES` (None when unset) and `CUDA_DEVICE_ORDER=PCI_BUS_ID`.

    Unset: every GPU, by PCI bus. Set: its entries in their own order, each an index
    into the bus order or a UUID ("GPU-..." or a unique prefix of one). As CUDA does, the
    list ends at the first entry that names no GPU, so "" or "-1" hides them all; such an
    entry is logged once. An entry repeated counts once.
    """
    by_bus = sorted(gpus, key=lambda gpu: gpu.bus_key)
    if visible_devices is None:
        return by_bus
    chosen: list[NvmlGpu] = []
    for entry in visible_devices.split(","):
        gpu = _named_by(entry.strip(), by_bus)
        if gpu is None:
            if entry.strip():
                _warn_once(
                    f"visible:{entry}",
                    "CUDA_VISIBLE_DEVICES entry %r names no GPU of this machine: it and the "
                    "entries after it are hidden, as CUDA hides them",
                    entry,
                )
            break
        if gpu not in chosen:
            chosen.append(gpu)
    return chosen


def _named_by(entry: str, by_bus: Sequence[NvmlGpu]) -> NvmlGpu | None:
    if entry.isdigit():
        index = int(entry)
        return by_bus[index] if index < len(by_bus) else None
    if not entry.upper().startswith("GPU-"):
        return None  # MIG instances and anything else: not a GPU Tandem can place on
    matches = [gpu for gpu in by_bus if gpu.uuid.upper().startswith(entry.upper())]
    return matches[0] if len(matches) == 1 else None


class NvmlInventory:
    """GPUs as NVML reports them, numbered as a worker's CUDA numbers them; no GPUs when
    NVML cannot start.

    Starts NVML on construction and shuts it down on `close` (also a context
    manager). `CUDA_VISIBLE_DEVICES` is read from `environ` (the process's own by
    default) once, here: the workers inherit it. A GPU whose reading fails later (fallen
    off the bus, say) reports no free memory, so memory-aware admission places nothing
    on it, and a warning.
    """

    def __init__(self, nvml: Nvml = pynvml, environ: Mapping[str, str] | None = None) -> None:
        self._nvml = nvml
        self._handles: list[Any] = []
        self._names: list[str] = []
        self._uuids: list[str] = []
        self._totals: list[int] = []
        self._started = False
        try:
            nvml.nvmlInit()
        except pynvml.NVMLError as error:
            _warn_once("init", "NVML is unavailable (%s): running without GPUs", error)
            return
        self._started = True
        visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
        try:
            listed = []
            for nvml_index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                bus_id = _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
                listed.append(NvmlGpu(uuid, bus_id, handle))
            for gpu in cuda_order(listed, visible):
                self._handles.append(gpu.handle)
                self._uuids.append(gpu.uuid)
                self._names.append(_text(nvml.nvmlDeviceGetName(gpu.handle)))
                self._totals.append(int(nvml.nvmlDeviceGetMemoryInfo(gpu.handle).total))
        except pynvml.NVMLError as error:
            # A driver that starts but cannot list its GPUs is no better than none.
            _warn_once("list", "NVML could not list the GPUs (%s): running without GPUs", error)
            self._handles, self._names, self._uuids, self._totals = [], [], [], []

    def gpu_count(self) -> int:
        return len(self._handles)

    def gpus(self) -> list[GpuInfo]:
        return [self.memory(index) for index in range(len(self._handles))]

    def memory(self, index: int) -> GpuInfo:
        if not 0 <= index < len(self._handles):
            raise IndexError(f"there is no GPU {index}; this machine has {self.gpu_count()}")
        total, name, uuid = self._totals[index], self._names[index], self._uuids[index]
        try:
            info = self._nvml.nvmlDeviceGetMemoryInfo(self._handles[index])
        except pynvml.NVMLError as error:
            _warn_once(f"memory:{uuid}", "NVML cannot read GPU %d, %s (%s)", index, uuid, error)
            return GpuInfo(index, name, total, used_bytes=total, free_bytes=0, uuid=uuid)
        return GpuInfo(index, name, int(info.total), int(info.used), int(info.free), uuid=uuid)

    def close(self) -> None:
        """Stop NVML (idempotent). Readings after this raise IndexError: no GPUs."""
        if self._started:
            self._started = False
            self._handles, self._names, self._uuids, self._totals = [], [], [], []
            try:
                self._nvml.nvmlShutdown()
            except pynvml.NVMLError as error:
                logger.debug("nvmlShutdown failed: %s", error)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _text(value: str | bytes) -> str:
    # Older NVML bindings return bytes for names.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class StaticInventory:
    """GPUs given up front, with memory use the owner sets: tests and `--fake-gpus` runs."""

    def __init__(self, gpus: Iterable[GpuInfo] = ()) -> None:
        self._gpus = sorted(gpus, key=lambda gpu: gpu.index)
        if [gpu.index for gpu in self._gpus] != list(range(len(self._gpus))):
            raise ValueError("GPU indexes must be 0, 1, 2, ... without gaps")

    @classmethod
    def uniform(
        cls, count: int, *, total_bytes: int = 16 * 2**30, name: str = "Fake GPU"
    ) -> StaticInventory:
        """`count` identical, idle GPUs."""
        return cls(GpuInfo(i, name, total_bytes, 0, total_bytes) for i in range(count))

    def gpu_count(self) -> int:
        return len(self._gpus)

    def gpus(self) -> list[GpuInfo]:
        return list(self._gpus)

    def memory(self, index: int) -> GpuInfo:
        if not 0 <= index < len(self._gpus):
            raise IndexError(f"there is no GPU {index}; this inventory has {len(self._gpus)}")
        return self._gpus[index]

    def set_used(self, index: int, used_bytes: int) -> None:
        """Pretend GPU `index` now has `used_bytes` in use."""
        gpu = self.memory(index)
        if not 0 <= used_bytes <= gpu.total_bytes:
            raise ValueError(f"used_bytes must be between 0 and {gpu.total_bytes}")
        self._gpus[index] = replace(
            gpu, used_bytes=used_bytes, free_bytes=gpu.total_bytes - used_bytes
        )
