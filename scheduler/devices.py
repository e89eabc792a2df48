"""Device strings as users write them, turned into the concrete devices a job may use.

Users ask for `cpu`, `cuda` (any GPU: the arbiter picks), `cuda:N` or `auto` (every
GPU if there is one, else the CPU). The arbiter only knows concrete devices (`cpu`,
`cuda:0`, ...), so a request becomes a tuple of candidates here. Asking for a GPU on a
machine without one is an error that says so: never a silent run on the CPU.
"""

from __future__ import annotations

from scheduler.types import DEFAULT_CPU_LIMITS, DEFAULT_GPU_LIMITS, Limits

__all__ = [
    "CPU",
    "DeviceError",
    "DeviceUnavailable",
    "InvalidDevice",
    "default_limits",
    "gpu_device",
    "gpu_devices",
    "resolve_candidates",
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
