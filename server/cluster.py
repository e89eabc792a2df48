"""The Ray side of a Tandem server (`--executor ray`): the connection, the cluster's
devices as the arbiter's, and a watcher that keeps the two equal as nodes come and go.

Devices are named per node (`node-1/cpu`, `node-2/cuda:0`; see engines/ray_cluster.py
for how nodes are named). Each gets the same default limits as on one machine (CPU
2 training + 4 inference, GPU 1 + 3), or the limits `UpdateLimits` saved for it.

When a node joins, its devices join the arbiter and waiting tasks may start there at
once. When one leaves (or the executor finds that the node under a running job died):
nothing new is admitted to its devices, the jobs that ran there end (training with a
checkpoint is queued again elsewhere, the rest fail naming the node), and its devices
leave the arbiter; a waiting task that could run only there fails with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from engines.ray_cluster import RayCluster, RayNode
from engines.ray_executor import RayExecutor
from scheduler import DEFAULT_CPU_LIMITS, DEFAULT_GPU_LIMITS, GpuInfo, Limits
from scheduler.devices import is_gpu, on_node, split_node
from server.config import ServerConfig
from server.device_registry import DeviceRegistry

log = logging.getLogger(__name__)

# How often the watcher reads the cluster's nodes and GPU memory.
REFRESH_S = 1.0


class ClusterInventory:
    """The cluster's GPUs behind the `DeviceInventory` seam, from the last refresh.

    `gpus()` lists every node's GPUs (node-1's first); `memory(i)` is the i-th of them.
    Readings are at most one refresh old; the memory gate also counts what it has
    admitted since, so a stale reading cannot overfill a GPU.
    """

    def __init__(self, cluster: RayCluster) -> None:
        self._cluster = cluster

    def gpu_count(self) -> int:
        return len(self._cluster.gpus())

    def gpus(self) -> list[GpuInfo]:
        return [
            GpuInfo(g.index, g.name, g.total_bytes, g.used_bytes, g.free_bytes, node=g.node)
            for g in self._cluster.gpus()
        ]

    def memory(self, index: int) -> GpuInfo:
        gpus = self.gpus()
        if not 0 <= index < len(gpus):
            raise IndexError(f"there is no GPU {index}; the cluster has {len(gpus)}")
        return gpus[index]

    def cores(self, device: str) -> int:
        """Logical CPUs of the node `device` is on (1 if it is unknown)."""
        node = self._cluster.node(split_node(device)[0])
        return max(1, int(node.cpus)) if node is not None else 1


def node_devices(node: RayNode) -> dict[str, Limits]:
    """A node's devices with their default limits."""
    return {
        on_node(node.name, device): DEFAULT_GPU_LIMITS if is_gpu(device) else DEFAULT_CPU_LIMITS
        for device in node.devices
    }


class Cluster:
    """Owns the Ray connection, the inventory, the executor and the watcher."""

    def __init__(self, config: ServerConfig) -> None:
        self.ray = RayCluster(config.ray_address, names_file=config.data_dir / "ray-nodes.json")
        self.inventory = ClusterInventory(self.ray)
        # This Cluster is the executor's listener: it hears of lost nodes and unusable
        # devices (only once `watch` has given it the registry: no job runs before).
        self.executor = RayExecutor(
            self.ray,
            self,
            split_node=split_node,
            prewarm=config.prewarm_workers,
            cancel_grace_s=config.cancel_grace_s,
        )
        self._devices: DeviceRegistry | None = None
        self._nodes: dict[str, RayNode] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Connects to Ray and reads the nodes; ConnectionError if there is no cluster."""
        await asyncio.to_thread(self.ray.connect)
        self._nodes = {node.name: node for node in self.ray.nodes()}

    def default_limits(self) -> dict[str, Limits]:
        """Every device of the cluster as connected, with its default limits."""
        limits: dict[str, Limits] = {}
        for node in self._nodes.values():
            limits.update(node_devices(node))
        return limits

    def watch(self, devices: DeviceRegistry) -> None:
        """Starts keeping `devices` equal to the cluster's (after the executor started)."""
        self._devices = devices
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        """Stops watching and disconnects from Ray (after the executor closed)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await asyncio.to_thread(self.ray.close)

    # -- keeping the arbiter's devices equal to the cluster's -------------------------

    async def _watch(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await asyncio.to_thread(self.ray.refresh)
            except Exception as exc:
                if not failing:  # once per outage, not once a second
                    log.warning("cannot read the Ray cluster's nodes: %s", exc)
                failing = True
                continue
            if failing:
                log.info("the Ray cluster answers again")
                failing = False
            try:
                self.sync()
            except Exception:  # one bad pass must not end the tracking of nodes
                log.exception("cannot apply the Ray cluster's node changes")

    def sync(self) -> None:
        """Applies what the last refresh saw: nodes that joined and nodes that left."""
        live = {node.name: node for node in self.ray.nodes()}
        for name in [name for name in self._nodes if name not in live]:
            self.node_left(name, f"{self._nodes[name].describe()} left the Ray cluster")
        for name, node in live.items():
            if name not in self._nodes:
                self._node_joined(node)

    def _node_joined(self, node: RayNode) -> None:
        assert self._devices is not None
        self._nodes[node.name] = node
        log.info(
            "%s joined the Ray cluster (%g CPUs, %d GPUs)", node.describe(), node.cpus, node.gpus
        )
        self._devices.add_devices(node_devices(node))
        self.executor.node_joined(node.name)

    def device_unusable(self, device: str, why: str) -> None:
        """No Ray actor could start on `device`: nothing more is admitted there (until
        `UpdateLimits` sets its limits again)."""
        assert self._devices is not None
        log.warning("holding %s: %s", device, why)
        self._devices.hold_devices([device])

    def node_left(self, name: str, why: str) -> None:
        """Node `name` is gone: hold its devices, end its jobs, then forget its devices."""
        assert self._devices is not None
        self.ray.forget(name)  # a refresh already under way must not bring it back
        if self._nodes.pop(name, None) is None:
            self.executor.node_lost(name, why)  # known gone already; just make sure
            return
        log.warning("%s", why)
        devices = [d for d in self._devices.devices if split_node(d)[0] == name]
        self._devices.hold_devices(devices)
        self.executor.node_lost(name, why)
        self._devices.remove_devices(devices, why)
