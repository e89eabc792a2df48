"""What runs jobs, one factory per executor: the executor, the devices it offers with
their default limits, and the cores under each device.

Each factory registers how to undo what it started on the caller's `AsyncExitStack`,
so a failed start and a normal stop unwind the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engines.executor import Executor
from engines.local import LocalExecutor
from scheduler import Limits, default_limits
from scheduler.inventory import DeviceInventory, NvmlInventory
from server.config import ServerConfig

if TYPE_CHECKING:  # Ray is imported only when the Ray executor is chosen
    from server.cluster import Cluster


@dataclass(frozen=True)
class Backend:
    """An executor ready to take jobs, and the devices it runs them on."""

    executor: Executor
    inventory: DeviceInventory
    default_limits: dict[str, Limits]
    # Logical CPUs of the machine a device is on (a Ray node's, on a cluster).
    cores: Callable[[str], int]
    # The Ray cluster, with `--executor ray`.
    cluster: Cluster | None = None


async def start_backend(
    config: ServerConfig, stack: AsyncExitStack, inventory: DeviceInventory | None = None
) -> Backend:
    """The backend `config.executor` names (`local` or `ray`), started."""
    if config.executor == "ray":
        return await _ray_backend(config, stack)
    return await _local_backend(config, stack, inventory or NvmlInventory())


async def _local_backend(
    config: ServerConfig, stack: AsyncExitStack, inventory: DeviceInventory
) -> Backend:
    executor = LocalExecutor(
        prewarm={"cpu": config.prewarm_workers} if config.prewarm_workers else {},
        cancel_grace_s=config.cancel_grace_s,
        environment=worker_environment(config),
    )
    stack.push_async_callback(executor.close)
    await executor.start()
    return Backend(executor, inventory, default_limits(len(inventory.gpus())), local_cores)


async def _ray_backend(config: ServerConfig, stack: AsyncExitStack) -> Backend:
    from server.cluster import Cluster

    cluster = Cluster(config)
    await cluster.connect()  # ConnectionError, with nothing to undo, if there is no cluster
    stack.push_async_callback(cluster.close)  # stops watching, disconnects from Ray
    stack.push_async_callback(cluster.executor.close)
    await cluster.executor.start()
    return Backend(
        cluster.executor,
        cluster.inventory,
        cluster.default_limits(),
        cluster.inventory.cores,
        cluster,
    )


def worker_environment(config: ServerConfig) -> dict[str, str]:
    """Variables a worker sets before it loads torch (OpenMP reads them only then)."""
    if config.omp_wait_policy:
        return {"OMP_WAIT_POLICY": config.omp_wait_policy.upper()}
    return {}


def local_cores(device: str) -> int:
    """The CPUs this process may run on (a container's or `taskset`'s share, not the
    machine's): the cores CPU jobs share."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
