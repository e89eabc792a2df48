"""Preemption: the arbiter's record of running jobs, and the choice of victims.

A waiting job W may ask running training jobs to yield (save their state and end)
when it is more urgent than them by a margin. Which ones: the fewest that make room,
because each victim loses the work since its last checkpoint and pays a restart; among
equally few, the least urgent, then the one that started last (least work at stake).
"Makes room" is the arbiter's question (slots, and the gate's `fits_after`); this
module only orders the candidates and searches their combinations, smallest first.

The search is exhaustive, so it is bounded: on a device with many small training jobs
it could otherwise try millions of combinations inside one event-loop call. Past the
bound it settles for the shortest run of candidates, in order, that makes room.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler._pool import Waiter
from scheduler.types import Admission, PreemptionPlan, Request

# Combinations tried before settling for a prefix; a few ms of gate calls at most.
SEARCH_BUDGET = 4096


@dataclass(eq=False, slots=True)
class RunningJob:
    """A running job, as preemption needs to see it."""

    admission: Admission
    request: Request
    # When it was admitted, on the arbiter's clock.
    started: float
    # Its effective priority when admitted: aging stops there, so a job does not grow
    # harder to preempt (or easier) the longer it runs.
    urgency: int
    # Asked to yield by a plan; it keeps its slot until it is released.
    yielding: bool = False


@dataclass(frozen=True, slots=True)
class Reservation:
    """A pool promised to `waiter`, whose `plan` is making room in it."""

    waiter: Waiter
    plan: PreemptionPlan


def victim_order(job: RunningJob) -> tuple[int, float]:
    """Sort key: the least urgent first, then the one admitted last. Sort jobs given
    newest first (a stable sort then keeps jobs admitted at one clock reading so)."""
    return (-job.urgency, -job.started)


def fewest_victims(
    candidates: Sequence[RunningJob],
    works: Callable[[Sequence[RunningJob]], bool],
    *,
    smallest: int = 1,
) -> tuple[RunningJob, ...] | None:
    """The first combination of the fewest `candidates` (already in victim order) that
    `works`, trying sizes from `smallest` up; None if none does.

    Assumes that freeing more never hurts (true of slots and of memory), so when all
    candidates together do not work nothing smaller is tried.
    """
    if not candidates or len(candidates) < smallest or not works(candidates):
        return None
    tried = 0
    for size in range(max(1, smallest), len(candidates)):
        for victims in itertools.combinations(candidates, size):
            if works(victims):
                return victims
            tried += 1
            if tried >= SEARCH_BUDGET:
                return _shortest_prefix(candidates, works, size)
    return tuple(candidates)


def _shortest_prefix(
    candidates: Sequence[RunningJob],
    works: Callable[[Sequence[RunningJob]], bool],
    start: int,
) -> tuple[RunningJob, ...]:
    # Only called once all of `candidates` is known to work, so this always returns.
    for size in range(start, len(candidates)):
        if works(candidates[:size]):
            return tuple(candidates[:size])
    return tuple(candidates)
