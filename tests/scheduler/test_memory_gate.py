"""Memory-aware GPU admission against a fake GPU inventory (the NVML boundary)."""

from __future__ import annotations

from scheduler import Admission, Arbiter, Kind, Limits, Request, StaticInventory
from scheduler.memory import (
    CONTEXT_BYTES,
    GIB,
    MemoryEstimates,
    MemoryGate,
    Shape,
    conservative_estimate,
)

TRAIN, INFER = Kind.TRAINING, Kind.INFERENCE


def gpu_request(job_id: str, gib: float, devices: tuple[str, ...], priority: int = 5) -> Request:
    return Request(job_id, INFER, priority, devices, memory_bytes=int(gib * GIB))


def two_gpus(used_gib: tuple[float, float]) -> tuple[StaticInventory, MemoryGate, Arbiter]:
    inventory = StaticInventory.uniform(2, total_bytes=16 * GIB)
    for index, used in enumerate(used_gib):
        inventory.set_used(index, int(used * GIB))
    gate = MemoryGate(inventory, headroom_bytes=GIB)
    limits = {"cpu": Limits(2, 4), "cuda:0": Limits(1, 3), "cuda:1": Limits(1, 3)}
    return inventory, gate, Arbiter(limits, gate=gate)


def test_any_gpu_goes_to_the_one_with_the_most_free_memory() -> None:
    _, _, arbiter = two_gpus((10, 2))
    both = ("cuda:0", "cuda:1")
    assert arbiter.submit(gpu_request("a", 4, both)) == [Admission("a", "cuda:1", INFER)]
    # cuda:1 now has 4 GiB reserved (free 14 by NVML, 16 - 4 = 12 by reservation): still
    # more room than cuda:0's 6, so it takes the next one too.
    assert arbiter.submit(gpu_request("b", 4, both)) == [Admission("b", "cuda:1", INFER)]
    # 16 - 8 reserved - 1 headroom = 7 on cuda:1 against 6 free - 1 = 5 on cuda:0.
    assert arbiter.submit(gpu_request("c", 4, both)) == [Admission("c", "cuda:1", INFER)]
    # Now 16 - 12 - 1 = 3 on cuda:1: cuda:0 has more room.
    assert arbiter.submit(gpu_request("d", 4, both)) == [Admission("d", "cuda:0", INFER)]


def test_a_task_waits_until_its_estimate_fits_and_says_why() -> None:
    inventory, gate, arbiter = two_gpus((14, 0))
    assert arbiter.submit(gpu_request("big", 3, ("cuda:0",))) == []
    info = arbiter.waiting_info("big")
    assert info is not None
    assert info.reason == "needs ~3.0 GB on cuda:0, 1.0 GB free"
    # A less urgent task for the same GPU may not jump ahead into the held slot.
    assert arbiter.submit(gpu_request("small", 0.1, ("cuda:0",), priority=9)) == []
    # Another process frees memory; the next tick admits the big one first.
    inventory.set_used(0, 4 * GIB)
    assert [a.job_id for a in arbiter.tick()] == ["big", "small"]
    assert gate.reserved("cuda:0") == int(3 * GIB) + int(0.1 * GIB)


def test_reservations_never_overcommit_a_gpu() -> None:
    _, gate, arbiter = two_gpus((0, 0))
    arbiter.set_limits("cuda:0", inference=100)
    admitted = []
    for i in range(20):
        admitted += arbiter.submit(gpu_request(f"j{i}", 2, ("cuda:0",)))
    # 16 GiB total - 1 GiB headroom: seven 2 GiB tasks fit, the eighth waits.
    assert len(admitted) == 7
    assert gate.reserved("cuda:0") == 14 * GIB
    assert [a.job_id for a in arbiter.release("j0")] == ["j7"]
    assert gate.reserved("cuda:0") == 14 * GIB


def test_the_cpu_is_not_gated() -> None:
    _, gate, arbiter = two_gpus((16, 16))
    assert gate.fits(gpu_request("x", 1000, ("cpu",)), "cpu")
    assert arbiter.submit(Request("cpu-job", TRAIN, 5, ("cpu",), memory_bytes=10**15)) != []


def test_estimates_prefer_measured_peaks_and_keep_the_largest() -> None:
    shape = Shape("resnet18", 32, 224, TRAIN)
    estimates = MemoryEstimates()
    guess = estimates.estimate(shape, 11_000_000)
    assert guess == conservative_estimate(shape, 11_000_000)
    estimates.record(shape, 2 * GIB)
    measured = estimates.estimate(shape, 11_000_000)
    assert measured == int(2 * GIB * 1.15) + CONTEXT_BYTES
    estimates.record(shape, GIB)  # a smaller later peak does not lower the estimate
    assert estimates.estimate(shape, 11_000_000) == measured
    estimates.raise_to(shape, 5 * GIB)  # after an out-of-memory failure
    assert estimates.estimate(shape, 11_000_000) > 5 * GIB


def test_the_conservative_estimate_grows_with_the_work() -> None:
    small = conservative_estimate(Shape("m", 8, 64, INFER), 1_000_000)
    assert conservative_estimate(Shape("m", 16, 64, INFER), 1_000_000) > small
    assert conservative_estimate(Shape("m", 8, 128, INFER), 1_000_000) > small
    assert conservative_estimate(Shape("m", 8, 64, TRAIN), 1_000_000) > small
    assert conservative_estimate(Shape("m", 8, 64, INFER), 50_000_000) > small
