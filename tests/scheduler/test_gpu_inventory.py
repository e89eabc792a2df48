"""The GPU inventory: real NVML on this machine, and the static stand-in."""

from __future__ import annotations

import logging

import pynvml
import pytest

from scheduler import inventory
from scheduler.inventory import DeviceInventory, GpuInfo, NvmlInventory, StaticInventory


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


@pytest.mark.skipif(not HAS_NVML, reason="no NVIDIA driver on this machine")
def test_with_nvml_readings_add_up() -> None:
    with NvmlInventory() as nvml:
        gpus = nvml.gpus()
        assert len(gpus) == nvml.gpu_count() >= 1
        for index, gpu in enumerate(gpus):
            assert gpu.index == index and gpu.device == f"cuda:{index}" and gpu.name
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
