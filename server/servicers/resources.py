"""`tandem.v1.ResourceService`: devices, their use and limits, GPU memory; run-time limits.

Device names in replies and requests: `cpu`, `cuda:N`, and `cuda` for every GPU at
once (the seed's shape: `{"max_concurrent": {"cuda": {"inference": 5}}}`). On a Ray
cluster devices are per node (`node-1/cpu`, `node-2/cuda:0`), and `cpu` and `cuda`
stand for every node's CPU and every GPU, in replies and in limit changes alike.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler import ArbiterStatistics, Kind, Limits
from scheduler.inventory import DeviceInventory
from server.device_registry import GROUPS, DeviceRegistry, LimitChange, groups_of
from server.errors import Context, invalid_argument, unary
from tandem import contract
from tandem.v1 import resource_service_pb2, resource_service_pb2_grpc, resources_pb2

GIB = 1024**3


def _limits_pb(limits: Limits) -> resources_pb2.ConcurrencyLimits:
    return resources_pb2.ConcurrencyLimits(training=limits.training, inference=limits.inference)


class ResourceServicer(resource_service_pb2_grpc.ResourceServiceServicer):
    def __init__(
        self,
        devices: DeviceRegistry,
        statistics: Callable[[], ArbiterStatistics],
        inventory: DeviceInventory,
        preemptions: Callable[[], int],
        estimated_bytes: Callable[[str], int],
    ) -> None:
        self._devices = devices
        self._statistics = statistics
        self._inventory = inventory
        self._preemptions = preemptions
        # What the memory gate holds for the jobs admitted to a GPU (`MemoryGate.reserved`).
        self._estimated_bytes = estimated_bytes

    def _max_concurrent(self) -> dict[str, resources_pb2.ConcurrencyLimits]:
        limits = {device: self._devices.limits(device) for device in self._devices.devices}
        result = {device: _limits_pb(value) for device, value in limits.items()}
        for group in GROUPS:
            members = {v for d, v in limits.items() if d != group and group in groups_of(d)}
            if len(members) == 1:  # all alike: the seed's "cuda" entry (and "cpu" on a cluster)
                result[group] = _limits_pb(members.pop())
            elif not members and group not in result:
                # No such device (yet): the limits kept for the group, if any were set.
                kept = self._devices.group_limits(group)
                if kept is not None:
                    result[group] = _limits_pb(kept)
        return result

    @unary
    async def GetResources(
        self, request: resource_service_pb2.GetResourcesRequest, context: Context
    ) -> resource_service_pb2.GetResourcesResponse:
        stats = self._statistics()
        usage: dict[str, resources_pb2.DeviceUsage] = {}
        for pool in stats.pools:
            for key in groups_of(pool.device):
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
                estimated_gb=round(self._estimated_bytes(gpu.device) / GIB, 3),
            )
            for gpu in self._inventory.gpus()
        }
        return resource_service_pb2.GetResourcesResponse(
            device_usage=usage,
            gpu_memory_info=memory,
            max_concurrent=self._max_concurrent(),
            preemptions_total=self._preemptions(),
        )

    @unary
    async def UpdateLimits(
        self, request: resource_service_pb2.UpdateLimitsRequest, context: Context
    ) -> resource_service_pb2.UpdateLimitsResponse:
        changes: dict[str, LimitChange] = {}
        groups: dict[str, LimitChange] = {}
        # Check everything first: a request is applied whole or not at all.
        for name, limits in request.max_concurrent.items():
            targets, group = self._devices.targets(name)
            values: list[int | None] = []
            for kind in ("training", "inference"):
                if not limits.HasField(kind):
                    values.append(None)
                    continue
                try:
                    values.append(contract.check_limit(name, kind, getattr(limits, kind)))
                except contract.OutOfRange as exc:
                    raise invalid_argument(str(exc)) from None
            for target in targets:
                changes[target] = (values[0], values[1])
            if group:
                groups[group] = (values[0], values[1])
        self._devices.set_limits(changes, groups)
        return resource_service_pb2.UpdateLimitsResponse(max_concurrent=self._max_concurrent())
