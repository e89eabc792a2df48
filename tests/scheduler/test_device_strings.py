"""Device strings: what users may write, and the sentences they get when it is wrong."""

from __future__ import annotations

import pytest

from scheduler import (
    DEFAULT_CPU_LIMITS,
    DEFAULT_GPU_LIMITS,
    DeviceError,
    DeviceUnavailable,
    InvalidDevice,
    default_limits,
    gpu_devices,
    resolve_candidates,
)


@pytest.mark.parametrize(
    ("requested", "gpu_count", "expected"),
    [
        ("cpu", 0, ("cpu",)),
        ("cpu", 2, ("cpu",)),
        ("auto", 0, ("cpu",)),
        ("auto", 2, ("cuda:0", "cuda:1")),
        ("cuda", 1, ("cuda:0",)),
        ("cuda", 3, ("cuda:0", "cuda:1", "cuda:2")),
        ("cuda:0", 1, ("cuda:0",)),
        ("cuda:2", 3, ("cuda:2",)),
        (" CUDA:1 ", 2, ("cuda:1",)),
        ("Auto", 0, ("cpu",)),
    ],
)
def test_resolves_to_concrete_candidates(
    requested: str, gpu_count: int, expected: tuple[str, ...]
) -> None:
    assert resolve_candidates(requested, gpu_count) == expected


GARBAGE = ["tpu", "", "gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda:1.0", "cpu:0", "cuda 0"]
# Unicode digits pass str.isdigit() and int(); they are not device numbers.
GARBAGE.append("cuda:\u0663")


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_is_invalid_and_the_message_lists_the_valid_forms(garbage: str) -> None:
    with pytest.raises(InvalidDevice) as caught:
        resolve_candidates(garbage, 1)
    message = str(caught.value)
    assert f"{garbage!r} is not a device" in message
    for form in ("cpu", "cuda (any GPU)", "cuda:N", "auto"):
        assert form in message
    assert caught.value.requested == garbage


@pytest.mark.parametrize(
    ("requested", "gpu_count", "message"),
    [
        ("cuda", 0, "cuda was requested but this machine has no GPU; use cpu or auto"),
        ("cuda:0", 0, "cuda:0 does not exist; this machine has no GPU; use cpu or auto"),
        ("cuda:3", 1, "cuda:3 does not exist; this machine has 1 GPU (cuda:0)"),
        ("cuda:2", 2, "cuda:2 does not exist; this machine has 2 GPUs (cuda:0, cuda:1)"),
        ("cuda:8", 8, "cuda:8 does not exist; this machine has 8 GPUs (cuda:0 to cuda:7)"),
    ],
)
def test_missing_devices_are_unavailable_with_a_sentence(
    requested: str, gpu_count: int, message: str
) -> None:
    with pytest.raises(DeviceUnavailable) as caught:
        resolve_candidates(requested, gpu_count)
    assert str(caught.value) == message


def test_device_errors_are_value_errors() -> None:
    assert issubclass(InvalidDevice, DeviceError) and issubclass(DeviceUnavailable, DeviceError)
    assert issubclass(DeviceError, ValueError)
    with pytest.raises(ValueError, match="gpu_count"):
        resolve_candidates("cpu", -1)


def test_default_limits_for_a_machine() -> None:
    assert gpu_devices(0) == ()
    assert default_limits(0) == {"cpu": DEFAULT_CPU_LIMITS}
    assert default_limits(2) == {
        "cpu": DEFAULT_CPU_LIMITS,
        "cuda:0": DEFAULT_GPU_LIMITS,
        "cuda:1": DEFAULT_GPU_LIMITS,
    }
