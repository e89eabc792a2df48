"""Admission decisions per second of `scheduler.Arbiter`, with 1k, 10k and 100k jobs waiting.

The server asks the arbiter for a decision every time a job ends or arrives, so the
question is how many "a slot came free: who runs next?" it answers per second, and
whether that stays flat as the waiting line grows.

Set-up, for each size N: the default machine shape of a host with two GPUs (`cpu`,
`cuda:0`, `cuda:1` at the default limits: 14 slots in all), aging on with an injected
clock, `max_waiting = N`. Jobs are training or inference, priority uniform in 0..10,
and arrive in proportion to each pool's slots so that no line grows or drains for
good; half of the GPU jobs accept either GPU (as `device="cuda"` does), the other half
one GPU. The line is filled to N waiting with every slot busy, then warmed up.

Timed loop, one step per job: release the longest-running job (every job runs as long
as the others, so pools drain in proportion to their limits), which admits the most
urgent waiter; then submit a new job, so N jobs keep waiting. A decision is one
admission; `perf_counter` times batches of steps (requests are made before each
batch, outside the timer) until a repeat has at least `min_decisions` decisions and
`min_seconds`; the figure is the best of `repeats` repeats, the sizes taking turns.
As in `timeit`, the garbage collector is paused during a repeat.

The clock moves by the same share of an aging interval per step at every N (a whole
line turns over in `TURNOVER_INTERVALS` intervals), so aging reorders the line as
much at 100k as at 1k and the sizes are compared like for like.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import random
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from bench.report import Goal
from scheduler import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    Arbiter,
    Kind,
    Limits,
    Request,
    default_limits,
    gpu_devices,
)

__all__ = ["GOALS", "Settings", "measure", "run"]

GPU_COUNT = 2
# The Arbiter's default aging interval; what matters is the clock step relative to it.
AGING_INTERVAL_S = 60.0
# A full line of N jobs takes this many aging intervals to turn over.
TURNOVER_INTERVALS = 5.0
# Share of GPU jobs that accept either GPU (device "cuda") rather than one.
ANY_GPU_SHARE = 0.5
SEED = 20261128

GOALS = (
    Goal("sched_decisions_per_s_10k", minimum=50_000),
    Goal("sched_slowdown_100k_vs_1k", maximum=2.0),
)


@dataclass(frozen=True)
class Settings:
    """How much to measure: line sizes (figure suffix -> waiting jobs) and repeat rules."""

    sizes: Mapping[str, int]
    min_decisions: int
    min_seconds: float
    repeats: int
    warmup_steps: int
    batch_steps: int


FULL = Settings(
    sizes={"1k": 1_000, "10k": 10_000, "100k": 100_000},
    min_decisions=20_000,
    min_seconds=0.5,
    repeats=3,
    warmup_steps=5_000,
    batch_steps=5_000,
)
SMOKE = Settings(
    sizes={"1k": 50, "10k": 100, "100k": 200},
    min_decisions=200,
    min_seconds=0.0,
    repeats=1,
    warmup_steps=50,
    batch_steps=100,
)


def run(smoke: bool) -> dict[str, float]:
    """Decisions per second at each size, and the per-decision slowdown of 100k vs 1k."""
    settings = SMOKE if smoke else FULL
    rates = measure(settings)
    figures = {f"sched_decisions_per_s_{label}": rate for label, rate in rates.items()}
    # Per-decision time at 100k over that at 1k: the inverse ratio of the rates.
    figures["sched_slowdown_100k_vs_1k"] = rates["1k"] / rates["100k"]
    return figures


def measure(settings: Settings) -> dict[str, float]:
    """Best-of-repeats admission decisions per second for each size in `settings`."""
    workloads = {label: Workload(waiting) for label, waiting in settings.sizes.items()}
    for workload in workloads.values():
        workload.fill()
        workload.feed(workload.mix.take(settings.warmup_steps))
    best = dict.fromkeys(workloads, 0.0)
    for _ in range(settings.repeats):
        # Sizes take turns, so a busy moment on a shared machine costs each size one
        # repeat instead of all of one size's repeats (which would skew the slowdown).
        for label, workload in workloads.items():
            best[label] = max(best[label], _decisions_per_s(workload, settings))
    for workload in workloads.values():
        workload.check()
    return best


def _decisions_per_s(workload: Workload, settings: Settings) -> float:
    decisions = 0
    elapsed = 0.0
    with _collector_paused():
        while decisions < settings.min_decisions or elapsed < settings.min_seconds:
            requests = workload.mix.take(settings.batch_steps)
            started = time.perf_counter()
            decisions += workload.feed(requests)
            elapsed += time.perf_counter() - started
    return decisions / elapsed


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    # As timeit does: a full collection walks every object of the process (all three
    # lines of jobs here), which is the process's cost, not the arbiter's. The arbiter
    # and the job mix make no cyclic garbage, so nothing piles up while it is paused.
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class ManualClock:
    """The arbiter's clock, moved only by the benchmark: aging without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class JobMix:
    """An endless, seeded stream of new jobs in the benchmark's mix."""

    def __init__(self, limits: Mapping[str, Limits], seed: int) -> None:
        self._random = random.Random(seed)
        self._ids = itertools.count()
        self._gpus = tuple(device for device in limits if device in gpu_devices(GPU_COUNT))
        # Each (device, kind) pool is a job's first choice in proportion to its slots.
        self._pools = [(device, kind) for device in limits for kind in Kind]
        self._weights = [limits[device].of(kind) for device, kind in self._pools]

    def take(self, count: int) -> list[Request]:
        """The next `count` jobs."""
        rng = self._random
        pools = rng.choices(self._pools, weights=self._weights, k=count)
        return [self._request(device, kind) for device, kind in pools]

    def _request(self, device: str, kind: Kind) -> Request:
        rng = self._random
        devices: tuple[str, ...] = (device,)
        if device in self._gpus and rng.random() < ANY_GPU_SHARE:
            # "cuda": every GPU, the drawn one first (a gate may reorder by free memory).
            devices += tuple(gpu for gpu in self._gpus if gpu != device)
        return Request(
            job_id=f"job-{next(self._ids)}",
            kind=kind,
            priority=rng.randint(MIN_PRIORITY, MAX_PRIORITY),
            devices=devices,
        )


class Workload:
    """One arbiter kept at `target` waiting jobs with every usable slot busy."""

    def __init__(self, target: int) -> None:
        if target < 1:
            raise ValueError(f"the target must be at least 1 waiting job, not {target}")
        limits = default_limits(GPU_COUNT)
        self.target = target
        self.clock = ManualClock()
        self.step_s = TURNOVER_INTERVALS * AGING_INTERVAL_S / target
        self.arbiter = Arbiter(
            limits, max_waiting=target, aging_interval_s=AGING_INTERVAL_S, clock=self.clock
        )
        self.mix = JobMix(limits, SEED + target)
        self.running: deque[str] = deque()  # oldest admission first
        self.waiting = 0

    def fill(self) -> None:
        """Submit jobs, one clock step apart, until `target` wait (every slot is then busy)."""
        while self.waiting < self.target:
            self.feed(self.mix.take(self.target - self.waiting))

    def feed(self, requests: list[Request]) -> int:
        """Submit `requests` in turn, first releasing jobs while the line is full.

        Returns the number of admissions (decisions) made. This is the timed loop, so
        it binds what it calls to locals and does nothing else.
        """
        release = self.arbiter.release
        submit = self.arbiter.submit
        oldest = self.running.popleft
        start = self.running.append
        clock = self.clock
        step_s = self.step_s
        target = self.target
        waiting = self.waiting
        decisions = 0
        for request in requests:
            while waiting >= target:
                # A released slot whose pool has no waiter admits nobody: release again.
                for admission in release(oldest()):
                    start(admission.job_id)
                    decisions += 1
                    waiting -= 1
            clock.now += step_s
            waiting += 1
            for admission in submit(request):
                start(admission.job_id)
                decisions += 1
                waiting -= 1
        self.waiting = waiting
        return decisions

    def check(self) -> None:
        """Raise RuntimeError if the arbiter does not hold what the loop believes it holds."""
        stats = self.arbiter.statistics()
        if stats.total_waiting != self.waiting or stats.total_running != len(self.running):
            raise RuntimeError(
                f"benchmark out of step: arbiter has {stats.total_waiting} waiting and "
                f"{stats.total_running} running, loop counted {self.waiting} and "
                f"{len(self.running)}"
            )
        idle = [pool for pool in stats.pools if pool.waiting and pool.free]
        if idle:
            raise RuntimeError(f"slots left free while jobs wait for them: {idle}")
