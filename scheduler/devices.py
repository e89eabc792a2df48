"""Device strings as users write them, turned into the concrete devices a job may use.

Users ask for `cpu`, `cuda` (any GPU: the arbiter picks), `cuda:N` or `auto` (every
GPU if there is one, else the CPU). The arbiter only knows concrete devices (`cpu`,
`cuda:0`, ...), so a request becomes a tuple of candidates here. Asking for a GPU on a
machine without one is an error that says so: never a silent run on the CPU.

On a cluster (the Ray executor) every device belongs to a node and its name says which:
`node-1/cpu`, `node-2/cuda:0`. The same words then mean the same thing cluster-wide:
`cpu` is any node's CPU, `cuda` any GPU, `cuda:N` GPU N of any node, `auto` every GPU
else every CPU; `node-2/cpu` (or `node-2/cuda`, `node-2/auto`...) keeps to one node.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.types import DEFAULT_CPU_LIMITS, DEFAULT_GPU_LIMITS, Limits

__all__ = [
    "CPU",
    "DeviceError",
    "DeviceUnavailable",
    "InvalidDevice",
    "default_limits",
    "device_group",
    "gpu_device",
    "gpu_devices",
    "is_gpu",
    "on_node",
    "resolve_among",
    "resolve_candidates",
    "split_node",
]

CPU = "cpu"
_CUDA = "cuda"
_AUTO = "auto"
_VALID_FORMS = (
    "cpu, cuda (any GPU), cuda:N (GPU number N, counting from 0), "
    "or auto (every GPU if there is one, else the CPU)"
)


class DeviceError(ValueError):
    """A requested device cannot be used; the message says why, as a sentence."""

    def __init__(self, message: str, requested: str) -> None:
        super().__init__(message)
        self.requested = requested


class InvalidDevice(DeviceError):
    """The string is not a device at all ("tpu", "cuda:x")."""


class DeviceUnavailable(DeviceError):
    """A well-formed device that this machine does not have ("cuda:3" with one GPU)."""


def gpu_device(index: int) -> str:
    """The concrete name of GPU `index`."""
    return f"{_CUDA}:{index}"


def gpu_devices(gpu_count: int) -> tuple[str, ...]:
    """Every GPU's concrete name: ("cuda:0", ..., "cuda:{gpu_count-1}")."""
    _check_count(gpu_count)
    return tuple(gpu_device(index) for index in range(gpu_count))


def default_limits(gpu_count: int) -> dict[str, Limits]:
    """Default limits for this machine: the CPU first, then each GPU."""
    limits = {CPU: DEFAULT_CPU_LIMITS}
    limits.update((device, DEFAULT_GPU_LIMITS) for device in gpu_devices(gpu_count))
    return limits


def resolve_candidates(requested: str, gpu_count: int) -> tuple[str, ...]:
    """Concrete candidate devices for `requested` on a machine with `gpu_count` GPUs.

    Case and surrounding spaces are ignored. GPUs come in index order; the caller may
    reorder them (by free memory, say) before submitting. Raises InvalidDevice for a
    string that is no device, DeviceUnavailable for a device this machine lacks.
    """
    _check_count(gpu_count)
    text = requested.strip().lower()
    if text == CPU:
        return (CPU,)
    if text == _AUTO:
        return gpu_devices(gpu_count) or (CPU,)
    if text == _CUDA:
        if gpu_count == 0:
            raise DeviceUnavailable(
                "cuda was requested but this machine has no GPU; use cpu or auto", requested
            )
        return gpu_devices(gpu_count)
    prefix, colon, number = text.partition(":")
    # isdecimal, not int(): int() would also take "+1", " 1" and "1_0".
    if prefix != _CUDA or not colon or not (number.isascii() and number.isdecimal()):
        raise InvalidDevice(f"{requested!r} is not a device; use {_VALID_FORMS}", requested)
    index = int(number)
    if index >= gpu_count:
        raise DeviceUnavailable(
            f"{gpu_device(index)} does not exist; {_describe_gpus(gpu_count)}", requested
        )
    return (gpu_device(index),)


NODE_SEPARATOR = "/"


def on_node(node: str, device: str) -> str:
    """The cluster-wide name of `device` ("cpu", "cuda:N") on `node`: "node-1/cpu"."""
    return f"{node}{NODE_SEPARATOR}{device}"


def split_node(device: str) -> tuple[str, str]:
    """("node-1", "cuda:0") for "node-1/cuda:0"; ("", "cuda:0") for a device of this machine."""
    node, _, local = device.rpartition(NODE_SEPARATOR)
    return node, local


def is_gpu(device: str) -> bool:
    """Whether a concrete device name ("cuda:0", "node-2/cuda:1") is a GPU."""
    return split_node(device)[1].startswith(f"{_CUDA}:")


def device_group(device: str) -> str:
    """The name that stands for every device like this one: "cuda" for any GPU, "cpu"
    for a cluster node's CPU; "" for this machine's own CPU (it is alone)."""
    node, local = split_node(device)
    if is_gpu(device):
        return _CUDA
    return CPU if node and local == CPU else ""


def resolve_among(requested: str, devices: Sequence[str]) -> tuple[str, ...]:
    """Concrete candidates for `requested` among `devices`, the arbiter's devices.

    Devices of one machine (`cpu`, `cuda:N`) resolve exactly as `resolve_candidates`.
    Devices of a cluster (`node-1/cpu`, `node-2/cuda:0`) resolve as the module says, in
    the order of `devices`. Raises InvalidDevice or DeviceUnavailable like it.
    """
    if not any(NODE_SEPARATOR in device for device in devices):
        return resolve_candidates(requested, sum(1 for d in devices if is_gpu(d)))
    text = requested.strip().lower()
    node, local = split_node(text)
    nodes = sorted({split_node(d)[0] for d in devices})
    if node and node not in nodes:
        raise DeviceUnavailable(
            f"there is no node {node!r} in the cluster; its nodes are {', '.join(nodes)}",
            requested,
        )
    where = node or "the cluster"
    mine = [d for d in devices if not node or split_node(d)[0] == node]
    cpus = tuple(d for d in mine if split_node(d)[1] == CPU)
    gpus = tuple(d for d in mine if is_gpu(d))
    if local == CPU and cpus:
        return cpus
    if local == _AUTO and (gpus or cpus):
        return gpus or cpus
    if local == _CUDA:
        if not gpus:
            raise DeviceUnavailable(
                f"cuda was requested but {where} has no GPU; use cpu or auto", requested
            )
        return gpus
    if local in (CPU, _AUTO):
        raise DeviceUnavailable(f"{where} has no device for {local!r} right now", requested)
    prefix, colon, number = local.partition(":")
    if prefix != _CUDA or not colon or not (number.isascii() and number.isdecimal()):
        raise InvalidDevice(
            f"{requested!r} is not a device; use {_VALID_FORMS}, optionally after a node "
            f"name ({nodes[0]}/cpu)",
            requested,
        )
    wanted = gpu_device(int(number))
    found = tuple(d for d in gpus if split_node(d)[1] == wanted)
    if not found:
        raise DeviceUnavailable(
            f"{wanted} does not exist on {'node ' + node if node else 'any node'}; "
            f"the GPUs of {where}: {', '.join(gpus) or 'none'}",
            requested,
        )
    return found


def _describe_gpus(gpu_count: int) -> str:
    if gpu_count == 0:
        return "this machine has no GPU; use cpu or auto"
    if gpu_count == 1:
        return "this machine has 1 GPU (cuda:0)"
    if gpu_count == 2:
        return "this machine has 2 GPUs (cuda:0, cuda:1)"
    return f"this machine has {gpu_count} GPUs (cuda:0 to {gpu_device(gpu_count - 1)})"


def _check_count(gpu_count: int) -> None:
    if gpu_count < 0:
        raise ValueError(f"gpu_count must be 0 or more, not {gpu_count}")
