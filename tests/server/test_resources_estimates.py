"""GetResources reports, per GPU, the memory that the estimates of the jobs admitted to it
hold, beside NVML's reading: the figure admission counts as taken (the dashboard shows
both). Real arbiter, memory gate, dispatcher, device registry and SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scheduler import Arbiter, Kind, Limits, Request, StaticInventory
from scheduler.memory import GIB, MemoryGate
from server.device_registry import DeviceRegistry
from server.dispatcher import Dispatcher
from server.servicers.resources import ResourceServicer
from server.store import TaskStore
from tandem.v1 import resource_service_pb2


async def _estimates(servicer: ResourceServicer) -> dict[str, float]:
    reply = await servicer.GetResources(resource_service_pb2.GetResourcesRequest(), None)  # type: ignore[arg-type]
    return {gpu.device: gpu.estimated_gb for gpu in reply.gpu_memory_info.values()}


def test_each_gpu_reports_the_estimates_of_the_jobs_admitted_to_it(tmp_path: Path) -> None:
    async def run() -> None:
        inventory = StaticInventory.uniform(2, total_bytes=16 * GIB)
        gate = MemoryGate(inventory, headroom_bytes=0)
        limits = {"cuda:0": Limits(training=1, inference=3), "cuda:1": Limits(1, 3)}
        dispatcher = Dispatcher(Arbiter(limits, gate=gate), tick_interval_s=0.01)
        store = TaskStore(tmp_path / "tandem.db")
        devices = DeviceRegistry(store, dispatcher)
        servicer = ResourceServicer(
            devices, devices.statistics, inventory, lambda: 0, gate.reserved
        )
        assert await _estimates(servicer) == {"cuda:0": 0.0, "cuda:1": 0.0}

        on_gpu_0 = ("cuda:0",)
        dispatcher.queue(Request("train", Kind.TRAINING, 5, on_gpu_0, memory_bytes=3 * GIB))
        dispatcher.queue(Request("serve", Kind.INFERENCE, 5, on_gpu_0, memory_bytes=GIB // 2))
        assert await _estimates(servicer) == {"cuda:0": 3.5, "cuda:1": 0.0}

        dispatcher.release("train")
        assert await _estimates(servicer) == {"cuda:0": 0.5, "cuda:1": 0.0}
        store.close()

    asyncio.run(run())
