"""The arbiter's vocabulary: job kinds, limits, priorities, requests and snapshots.

Every value here is a frozen dataclass or an enum, so what the arbiter hands out can
be kept, compared and logged without anyone changing it behind the arbiter's back.
Limits and priorities are defined here once; the server and the CLI import them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DEFAULT_CPU_LIMITS",
    "DEFAULT_GPU_LIMITS",
    "DEFAULT_PRIORITY",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Admission",
    "AdmissionGate",
    "ArbiterStatistics",
    "Kind",
    "Limits",
    "PoolStatistics",
    "PreemptionPlan",
    "QueueFull",
    "Request",
    "WaitingInfo",
    "check_priority",
]

# Lower runs first. The seed's examples: training at 7, latency-sensitive inference at 2.
MIN_PRIORITY = 0
MAX_PRIORITY = 10
DEFAULT_PRIORITY = 5


class Kind(enum.Enum):
    """Which slot pool of a device a job occupies (online predict uses INFERENCE)."""

    TRAINING = "training"
    INFERENCE = "inference"


@dataclass(frozen=True)
class Limits:
    """How many jobs of each kind may run at once on one device."""

    training: int
    inference: int

    def __post_init__(self) -> None:
        for kind in Kind:
            _check_limit(kind, getattr(self, kind.value))

    def of(self, kind: Kind) -> int:
        """The limit for one kind."""
        return self.training if kind is Kind.TRAINING else self.inference


def _check_limit(kind: Kind, value: object) -> None:
    # bool is an int subclass; `training=True` is a bug, not a limit of 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"the {kind.value} limit must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"the {kind.value} limit must be 0 or more, not {value}")


# The one source of truth for default concurrency (see DESIGN.md, "Tasks").
DEFAULT_GPU_LIMITS = Limits(training=1, inference=3)
DEFAULT_CPU_LIMITS = Limits(training=2, inference=4)


def check_priority(priority: object) -> int:
    """Return `priority` if it is an int in MIN_PRIORITY..MAX_PRIORITY, else raise ValueError."""
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError(f"priority must be an integer, not {priority!r}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(
            f"priority must be between {MIN_PRIORITY} (most urgent) and {MAX_PRIORITY}, "
            f"not {priority}"
        )
    return priority


@dataclass(frozen=True)
class Request:
    """A job asking for one slot of its kind on one of its candidate devices.

    `devices` are concrete device names known to the arbiter, in order of preference:
    when several have a free slot the first listed wins, so the caller orders them
    (for example by free memory). `submit_time` is on the arbiter's clock
    (`time.monotonic` unless one was injected); None means "now, when submitted".
    Pass an earlier time only to requeue a job that was already waiting (after a
    restart, say) so it keeps its place and its aging. `memory_bytes` is the job's
    estimated peak device memory (0: unknown); only an `AdmissionGate` reads it.
    `preemptible` lets a more urgent job ask this one, once running, to yield its
    device (`Arbiter.plan_preemptions`); only training jobs that can save their state
    and resume are ever chosen.
    """

    job_id: str
    kind: Kind
    priority: int
    devices: tuple[str, ...]
    submit_time: float | None = None
    memory_bytes: int = 0
    preemptible: bool = False


@dataclass(frozen=True)
class Admission:
    """A job was given a slot: it may start on `device` now."""

    job_id: str
    device: str
    kind: Kind


@dataclass(frozen=True)
class PreemptionPlan:
    """The waiting job `job_id` will start on `device` once the running `victims` have
    yielded: the caller asks each victim to save its state and end, then releases it
    as usual. Until then the freed slot is reserved for `job_id`."""

    job_id: str
    device: str
    victims: tuple[str, ...]


class QueueFull(Exception):
    """The waiting queue holds `max_waiting` jobs and this one could not start at once."""


class AdmissionGate(Protocol):
    """An extra condition on admission, beyond free slots: the seam for memory budgets.

    The arbiter asks `fits` for the most urgent waiting job and a device with a free
    slot; False keeps the job waiting and, because a free slot always goes to the
    most urgent waiter (no barging), holds that slot too: no less urgent job jumps
    ahead, so large jobs are not starved by a stream of small ones. The gate sees
    changes it causes through `admitted`/`released` (to reserve memory, say); for
    changes it does not cause (memory freed by another process), the caller calls
    `Arbiter.tick()`.

    Calls come from inside Arbiter methods, in the same thread. `fits` and
    `fits_after` must be cheap and free of side effects; an exception from either is
    logged and counts as "does not fit". `admitted` and `released` must not raise.
    """

    def fits(self, request: Request, device: str) -> bool:
        """Could `request` start on `device` now (given what is already admitted)?"""
        ...

    def fits_after(self, request: Request, device: str, released: Sequence[Admission]) -> bool:
        """Would `request` fit on `device` once the jobs behind `released` have ended and
        given their memory back? Asked while choosing whom to preempt: the arbiter
        assumes that freeing more never turns a yes into a no."""
        ...

    def admitted(self, request: Request, device: str) -> None:
        """`request` was admitted on `device`: account for it."""
        ...

    def released(self, admission: Admission) -> None:
        """The job behind `admission` ended: forget it."""
        ...

    def rank(self, request: Request, devices: Sequence[str]) -> Sequence[str]:
        """`devices` (each with a free slot) in the order `request` should try them,
        best first (for example most free memory first). Must not drop any."""
        ...

    def explain(self, request: Request, device: str) -> str:
        """Why `request` does not fit on `device` now, for people
        ("needs ~3.1 GB on cuda:0, 1.2 GB free")."""
        ...


@dataclass(frozen=True)
class PoolStatistics:
    """One (device, kind) slot pool at the moment of the snapshot.

    `running` can exceed `limit` for a while after a limit was lowered: running work
    is never evicted. `waiting` counts every waiting job that could use this pool, so
    a job that accepts several devices is counted in each of their pools.
    """

    device: str
    kind: Kind
    limit: int
    running: int
    waiting: int

    @property
    def free(self) -> int:
        """Slots that could be given out now (0 while over a lowered limit)."""
        return max(0, self.limit - self.running)


@dataclass(frozen=True)
class ArbiterStatistics:
    """A frozen snapshot of the whole arbiter, for tests and the Resources RPC."""

    pools: tuple[PoolStatistics, ...]
    # Distinct jobs: a job waiting for any of several devices counts once here.
    total_waiting: int
    total_running: int

    def pool(self, device: str, kind: Kind) -> PoolStatistics:
        """The snapshot of one pool; KeyError if the device is unknown."""
        for pool in self.pools:
            if pool.device == device and pool.kind is kind:
                return pool
        raise KeyError(f"no {kind.value} pool for device {device!r}")

    def limit(self, device: str, kind: Kind) -> int:
        """Shorthand for `pool(device, kind).limit`."""
        return self.pool(device, kind).limit

    def running(self, device: str, kind: Kind) -> int:
        """Shorthand for `pool(device, kind).running`."""
        return self.pool(device, kind).running

    def waiting(self, device: str, kind: Kind) -> int:
        """Shorthand for `pool(device, kind).waiting`."""
        return self.pool(device, kind).waiting


@dataclass(frozen=True)
class WaitingInfo:
    """Where a waiting job stands, for people: shown on a queued task.

    `position` is 1-based among the waiting jobs that compete for at least one of the
    same (device, kind) pools: 1 means nobody more urgent is waiting for those slots.
    `reason` is a sentence, e.g. "2 of 2 cpu training slots busy".
    """

    job_id: str
    position: int
    priority: int
    effective_priority: int
    waited_s: float
    reason: str
