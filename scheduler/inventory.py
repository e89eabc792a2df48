"""Which GPUs this machine has and how much memory each has free.

`DeviceInventory` is the seam; `NvmlInventory` reads NVIDIA's management library
(the `pynvml` module of nvidia-ml-py), which needs no CUDA context and no torch, so
the server can ask from its own process without touching the GPUs. On a machine
without a GPU or driver NVML fails to start: that means "no GPUs", logged once, never
a crash. `StaticInventory` is the honest stand-in at that boundary, for tests and for
dev runs with made-up GPUs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol, Self

import pynvml

from scheduler.devices import gpu_device, on_node

__all__ = ["DeviceInventory", "GpuInfo", "NvmlInventory", "StaticInventory"]

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


class NvmlInventory:
    """GPUs as NVML reports them; no GPUs when NVML cannot start.

    Starts NVML on construction and shuts it down on `close` (also a context
    manager). A GPU whose reading fails later (fallen off the bus, say) reports no
    free memory, so memory-aware admission places nothing on it, and a warning.
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._names: list[str] = []
        self._totals: list[int] = []
        self._started = False
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            _warn_once("init", "NVML is unavailable (%s): running without GPUs", error)
            return
        self._started = True
        try:
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                self._handles.append(handle)
                self._names.append(_text(pynvml.nvmlDeviceGetName(handle)))
                self._totals.append(int(pynvml.nvmlDeviceGetMemoryInfo(handle).total))
        except pynvml.NVMLError as error:
            # A driver that starts but cannot list its GPUs is no better than none.
            _warn_once("list", "NVML could not list the GPUs (%s): running without GPUs", error)
            self._handles, self._names, self._totals = [], [], []

    def gpu_count(self) -> int:
        return len(self._handles)

    def gpus(self) -> list[GpuInfo]:
        return [self.memory(index) for index in range(len(self._handles))]

    def memory(self, index: int) -> GpuInfo:
        if not 0 <= index < len(self._handles):
            raise IndexError(f"there is no GPU {index}; this machine has {self.gpu_count()}")
        total = self._totals[index]
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(self._handles[index])
        except pynvml.NVMLError as error:
            _warn_once(f"memory:{index}", "NVML cannot read GPU %d (%s)", index, error)
            return GpuInfo(index, self._names[index], total, used_bytes=total, free_bytes=0)
        return GpuInfo(index, self._names[index], int(info.total), int(info.used), int(info.free))

    def close(self) -> None:
        """Stop NVML (idempotent). Readings after this raise IndexError: no GPUs."""
        if self._started:
            self._started = False
            self._handles, self._names, self._totals = [], [], []
            try:
                pynvml.nvmlShutdown()
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
