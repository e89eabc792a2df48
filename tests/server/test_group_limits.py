"""Limits for a device group with no device yet (`cuda` on a host without a GPU): the
seed's `{"max_concurrent": {"cuda": ...}}` is accepted, kept across a restart, reported
back, and applied to no device until one exists."""

from __future__ import annotations

from collections.abc import Callable

from scheduler import GpuInfo
from tandem.v1 import resource_service_pb2, resources_pb2
from tests.conftest import Stubs
from tests.harness.threaded import ServerThread


class NoGpus:
    """The machine as NVML sees it when there is no GPU (also on a GPU host)."""

    def gpu_count(self) -> int:
        return 0

    def gpus(self) -> list[GpuInfo]:
        return []

    def memory(self, index: int) -> GpuInfo:
        raise IndexError(f"there is no GPU {index}; this machine has none")


def _limits(stubs: Stubs) -> dict[str, tuple[int, int]]:
    reply = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    return {k: (v.training, v.inference) for k, v in reply.max_concurrent.items()}


def test_cuda_limits_without_a_gpu_are_kept_and_reported(
    fresh_server: Callable[..., ServerThread],
) -> None:
    server = fresh_server(NoGpus())
    stubs = Stubs.connect(server.port)
    assert "cuda" not in _limits(stubs)  # nothing set, nothing shown

    request = resource_service_pb2.UpdateLimitsRequest(
        max_concurrent={"cuda": resources_pb2.ConcurrencyLimits(training=1, inference=5)}
    )
    reply = stubs.resources.UpdateLimits(request)
    assert (reply.max_concurrent["cuda"].training, reply.max_concurrent["cuda"].inference) == (1, 5)
    assert _limits(stubs)["cuda"] == (1, 5)
    service = server.service
    assert service is not None
    assert server.call(lambda: service.devices.devices) == ("cpu",)  # no GPU was made up

    # Only the inference limit changes; the training one is kept.
    only = resource_service_pb2.UpdateLimitsRequest(
        max_concurrent={"cuda": resources_pb2.ConcurrencyLimits(inference=2)}
    )
    stubs.resources.UpdateLimits(only)
    stubs.channel.close()
    server.stop()

    again = fresh_server(NoGpus())  # the same data dir
    restarted = Stubs.connect(again.port)
    assert _limits(restarted)["cuda"] == (1, 2)
    restarted.channel.close()
