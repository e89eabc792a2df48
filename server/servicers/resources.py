"""`tandem.v1.ResourceService`: devices, their use and limits, GPU memory; run-time limits.

Device names in replies and requests: `cpu`, `cuda:N`, and `cuda` for every GPU at
once (the seed's shape: `{"max_concurrent": {"cuda": {"inference": 5}}}`). On a Ray
cluster devices are per node (`node-1/cpu`, `node-2/cuda:0`), and `cpu` and `cuda`
stand for every node's CPU and every GPU, in replies and in limit changes alike.
"""

from __future__ import annotations

from scheduler import Kind, Limits
from scheduler.devices import CPU, device_group, is_gpu
from scheduler.inventory import DeviceInventory
from server.errors import Context, invalid_argument, not_found, unary
from server.manager import TaskManager
from tandem.v1 import resource_service_pb2, resource_service_pb2_grpc, resources_pb2

GIB = 1024**3
MAX_LIMIT = 256
ALL_GPUS = "cuda"


def _groups(device: str) -> list[str]:
    """The names a device's figures are shown under: its own, and `cuda` for every GPU
    or (on a cluster) `cpu` for every node's CPU."""
    group = device_group(device)
    return [device, group] if group else [device]


def _limits_pb(limits: Limits) -> resources_pb2.ConcurrencyLimits:
    return resources_pb2.ConcurrencyLimits(training=limits.training, inference=limits.inference)


class ResourceServicer(resource_service_pb2_grpc.ResourceServiceServicer):
    def __init__(self, manager: TaskManager, inventory: DeviceInventory) -> None:
        self._manager = manager
        self._inventory = inventory

    def _max_concurrent(self) -> dict[str, resources_pb2.ConcurrencyLimits]:
        arbiter = self._manager.arbiter
        limits = {device: arbiter.limits(device) for device in arbiter.devices}
        result = {device: _limits_pb(value) for device, value in limits.items()}
        for group in (ALL_GPUS, CPU):
            members = {v for d, v in limits.items() if d != group and group in _groups(d)}
            if len(members) == 1:  # all alike: the seed's "cuda" entry (and "cpu" on a cluster)
                result[group] = _limits_pb(members.pop())
        return result

    @unary
    async def GetResources(
        self, request: resource_service_pb2.GetResourcesRequest, context: Context
    ) -> resource_service_pb2.GetResourcesResponse:
        stats = self._manager.arbiter.statistics()
        usage: dict[str, resources_pb2.DeviceUsage] = {}
        for pool in stats.pools:
            for key in _groups(pool.device):
                entry = usage.setdefault(key, resources_pb2.DeviceUsage())
                if pool.kind is Kind.TRAINING:
                    entry.training += pool.running
                    entry.queued_training += pool.waiting
                else:
                    entry.inference += pool.running
                    entry.queued_inference += pool.waiting
        memory = {
            gpu.key: resources_pb2.GpuMemoryInfo(
                total_gb=round(gpu.total_bytes / GIB, 3),
                allocated_gb=round(gpu.used_bytes / GIB, 3),
                free_gb=round(gpu.free_bytes / GIB, 3),
                device=gpu.device,
                name=gpu.name,
            )
            for gpu in self._inventory.gpus()
        }
        return resource_service_pb2.GetResourcesResponse(
            device_usage=usage, gpu_memory_info=memory, max_concurrent=self._max_concurrent()
        )

    @unary
    async def UpdateLimits(
        self, request: resource_service_pb2.UpdateLimitsRequest, context: Context
    ) -> resource_service_pb2.UpdateLimitsResponse:
        devices = self._manager.arbiter.devices
        gpus = [d for d in devices if is_gpu(d)]
        node_cpus = [d for d in devices if d != CPU and CPU in _groups(d)]
        changes: dict[str, tuple[int | None, int | None]] = {}
        groups: dict[str, tuple[int | None, int | None]] = {}
        # Check everything first: a request is applied whole or not at all.
        for name, limits in request.max_concurrent.items():
            key = name.strip().lower()
            if key == ALL_GPUS:
                if not gpus:
                    raise not_found("this machine has no GPU: there are no cuda limits to set")
                targets = gpus
            elif key in devices:
                targets = [key]
            elif key == CPU and node_cpus:  # a cluster: every node's CPU
                targets = node_cpus
            else:
                raise not_found(f"unknown device {name!r}; devices here: {', '.join(devices)}")
            values: list[int | None] = []
            for kind in ("training", "inference"):
                if not limits.HasField(kind):
                    values.append(None)
                    continue
                value = getattr(limits, kind)
                if not 0 <= value <= MAX_LIMIT:
                    raise invalid_argument(
                        f"max_concurrent[{name!r}].{kind} must be between 0 and {MAX_LIMIT}, "
                        f"got {value}"
                    )
                values.append(value)
            for target in targets:
                changes[target] = (values[0], values[1])
            if key in (ALL_GPUS, CPU) and key not in devices:
                groups[key] = (values[0], values[1])
        self._manager.set_limits(changes, groups)
        return resource_service_pb2.UpdateLimitsResponse(max_concurrent=self._max_concurrent())
