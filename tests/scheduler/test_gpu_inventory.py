"""The GPU inventory: real NVML on this machine, and the static stand-in."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

import pynvml
import pytest

from scheduler import inventory
from scheduler.inventory import (
    DeviceInventory,
    GpuInfo,
    NvmlGpu,
    NvmlInventory,
    StaticInventory,
    cuda_order,
)


def nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


HAS_NVML = nvml_works()


@pytest.mark.skipif(HAS_NVML, reason="this machine has a working NVML")
def test_without_nvml_there_are_no_gpus_and_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inventory, "_warned", set())  # forget warnings of earlier tests
    with caplog.at_level(logging.WARNING, logger="scheduler.inventory"):
        first, second = NvmlInventory(), NvmlInventory()
    assert first.gpus() == [] and second.gpu_count() == 0
    with pytest.raises(IndexError):
        first.memory(0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "NVML is unavailable" in warnings[0].getMessage()
    assert "running without GPUs" in warnings[0].getMessage()
    first.close()
    second.close()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_NVML, reason="needs a GPU: no NVIDIA driver on this machine")
def test_with_nvml_readings_add_up() -> None:
    with NvmlInventory() as nvml:
        gpus = nvml.gpus()
        assert len(gpus) == nvml.gpu_count() >= 1
        for index, gpu in enumerate(gpus):
            assert gpu.index == index and gpu.device == f"cuda:{index}" and gpu.name
            assert gpu.uuid.startswith("GPU-")
            assert gpu.total_bytes > 0
            assert 0 <= gpu.free_bytes <= gpu.total_bytes
            assert 0 <= gpu.used_bytes <= gpu.total_bytes
            assert nvml.memory(index).total_bytes == gpu.total_bytes
    assert nvml.gpu_count() == 0  # closed


def test_static_inventory_is_a_device_inventory() -> None:
    fake: DeviceInventory = StaticInventory.uniform(2, total_bytes=1000, name="Test GPU")
    assert fake.gpu_count() == 2
    assert fake.gpus() == [
        GpuInfo(0, "Test GPU", 1000, 0, 1000),
        GpuInfo(1, "Test GPU", 1000, 0, 1000),
    ]
    assert isinstance(fake, StaticInventory)
    fake.set_used(1, 600)
    assert fake.memory(1) == GpuInfo(1, "Test GPU", 1000, 600, 400)
    with pytest.raises(ValueError):
        fake.set_used(0, 1001)
    with pytest.raises(IndexError):
        fake.memory(2)
    with pytest.raises(ValueError, match="without gaps"):
        StaticInventory([GpuInfo(1, "x", 1, 0, 1)])


# -- CUDA's numbering at the NVML boundary ---------------------------------------------


@dataclass
class FakeGpu:
    uuid: str
    bus_id: str
    total: int
    used: int = 0
    readable: bool = True


class FakeNvml:
    """NVML's calls (as `pynvml` names them) over made-up GPUs, listed in the order
    given: NVML's own index order. A handle is the FakeGpu itself."""

    def __init__(self, gpus: list[FakeGpu], *, driver: bool = True) -> None:
        self.gpus, self.driver, self.running = gpus, driver, False

    def nvmlInit(self) -> None:
        if not self.driver:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        self.running = True

    def nvmlShutdown(self) -> None:
        self.running = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: FakeGpu) -> bytes:
        return f"Fake {handle.total} B".encode()  # bytes, as older bindings return

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return handle.uuid

    def nvmlDeviceGetPciInfo(self, handle: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(busId=handle.bus_id.encode())

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> SimpleNamespace:
        if not handle.readable:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return SimpleNamespace(
            total=handle.total, used=handle.used, free=handle.total - handle.used
        )


A_UUID = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
B_UUID = "GPU-bbbbbbbb-1111-2222-3333-444444444444"
C_UUID = "GPU-cccccccc-1111-2222-3333-444444444444"


def three_gpus() -> FakeNvml:
    """NVML lists them C, A, B; by PCI bus they are A (1a), B (3b), C (81, domain 1 last)."""
    return FakeNvml(
        [
            FakeGpu(C_UUID, "00000001:81:00.0", total=300, used=30),
            FakeGpu(A_UUID, "00000000:1A:00.0", total=100, used=10),
            FakeGpu(B_UUID, "00000000:3B:00.0", total=200, used=20),
        ]
    )


def numbered(visible: str | None, nvml: FakeNvml | None = None) -> list[tuple[str, str, int]]:
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    with NvmlInventory(nvml or three_gpus(), environ=env) as gpus:
        assert gpus.gpu_count() == len(gpus.gpus())
        return [(gpu.device, gpu.uuid, gpu.used_bytes) for gpu in gpus.gpus()]


def test_without_cuda_visible_devices_cuda_n_is_the_nth_gpu_by_pci_bus() -> None:
    assert numbered(None) == [
        ("cuda:0", A_UUID, 10),
        ("cuda:1", B_UUID, 20),
        ("cuda:2", C_UUID, 30),
    ]


def test_visible_devices_by_uuid_in_their_own_order_hide_the_rest() -> None:
    assert numbered(f"{C_UUID},{A_UUID}") == [("cuda:0", C_UUID, 30), ("cuda:1", A_UUID, 10)]
    assert numbered(" GPU-bbbb ") == [("cuda:0", B_UUID, 20)]  # a unique prefix, as CUDA
    assert numbered(A_UUID.upper()) == [("cuda:0", A_UUID, 10)]


def test_visible_devices_by_index_count_in_pci_bus_order_not_nvml_order() -> None:
    assert numbered("2,0") == [("cuda:0", C_UUID, 30), ("cuda:1", A_UUID, 10)]
    assert numbered("1") == [("cuda:0", B_UUID, 20)]
    assert numbered("1,1") == [("cuda:0", B_UUID, 20)]  # named twice, counted once


def test_an_entry_that_names_no_gpu_ends_the_list_as_in_cuda() -> None:
    unknown = "GPU-ffffffff-0000-0000-0000-000000000000"
    assert numbered(f"{B_UUID},{unknown}") == [("cuda:0", B_UUID, 20)]  # ignored
    assert numbered(f"0,7,{C_UUID}") == [("cuda:0", A_UUID, 10)]
    assert numbered(f"{unknown},{C_UUID}") == []
    assert numbered("GPU-") == []  # a prefix of every UUID names none of them
    assert numbered("") == [] and numbered("-1") == []  # the usual ways to hide them all
    assert numbered("MIG-aaaa") == []  # a MIG instance is no GPU Tandem places on


def test_readings_follow_the_uuid_the_index_stands_for() -> None:
    nvml = three_gpus()
    with NvmlInventory(nvml, environ={"CUDA_VISIBLE_DEVICES": "2,1"}) as gpus:
        nvml.gpus[0].used = 250  # C, NVML's GPU 0, is cuda:0 here
        assert (gpus.memory(0).uuid, gpus.memory(0).free_bytes) == (C_UUID, 50)
        assert gpus.memory(1) == GpuInfo(1, "Fake 200 B", 200, 20, 180, uuid=B_UUID)
        with pytest.raises(IndexError):
            gpus.memory(2)
        nvml.gpus[2].readable = False  # B fell off the bus: nothing more goes there
        lost = gpus.memory(1)
        assert (lost.used_bytes, lost.free_bytes) == (200, 0)
    assert not nvml.running and gpus.gpu_count() == 0


def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", C_UUID)
    with NvmlInventory(three_gpus()) as gpus:
        assert [gpu.uuid for gpu in gpus.gpus()] == [C_UUID]


def test_a_fake_driver_that_does_not_start_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory, "_warned", set())
    nvml = FakeNvml([FakeGpu(A_UUID, "00000000:1A:00.0", 100)], driver=False)
    with NvmlInventory(nvml) as gpus:
        assert gpus.gpus() == []


def test_bus_ids_sort_by_domain_bus_device_and_function() -> None:
    ids = ["0000:81:00.0", "00000000:1a:00.1", "00000000:1A:00.0", "0001:00:00.0", "junk"]
    gpus = [NvmlGpu(f"GPU-{i}", bus_id) for i, bus_id in enumerate(ids)]
    assert [gpu.bus_id for gpu in cuda_order(gpus, None)] == [
        "00000000:1A:00.0",
        "00000000:1a:00.1",
        "0000:81:00.0",
        "0001:00:00.0",
        "junk",
    ]
