"""Work-conserving CPU threads: the cores of a device follow the jobs running on it.

A lone job on a CPU device gets every core. As jobs start and end, the cores are
shared again among the jobs computing there, and each running job is told its new
count, which it takes up at its next batch boundary (a served model: before its next
forward pass). The sum of the counts never exceeds the cores while there are no more
jobs than cores; past that each job keeps one thread.

Who gets the share that does not divide evenly: served models first (someone waits on
each answer), then batch jobs in the order they started. A served model that has sat
idle for a moment (`pause`) stops counting, so its cores go to the batch jobs beside it,
and counts again the moment a request comes (`resume`). A GPU job keeps a few threads
to feed its GPU and is not part of any CPU's share: its threads mostly wait on the GPU.

Everything runs on the event loop thread.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.devices import is_gpu

log = logging.getLogger(__name__)

# Threads of a job on a GPU: enough to feed it (data loading, kernel launches).
GPU_FEEDER_THREADS = 4


class Role(enum.Enum):
    """How a job uses its threads: answering requests, or working through a batch."""

    SERVING = "serving"
    BATCH = "batch"


@dataclass
class _Job:
    device: str
    role: Role
    threads: int
    paused: bool = False


def plan(cores: int, jobs: Sequence[tuple[str, Role]]) -> dict[str, int]:
    """Threads per job for `jobs` (in the order they started) sharing `cores`: equal
    shares, the remainder one each to served models first, then to batch jobs."""
    if not jobs:
        return {}
    base, extra = divmod(max(1, cores), len(jobs))
    if base == 0:  # more jobs than cores: one thread each
        return {job_id: 1 for job_id, _ in jobs}
    order = [j for j, role in jobs if role is Role.SERVING] + [
        j for j, role in jobs if role is not Role.SERVING
    ]
    return {job_id: base + (1 if i < extra else 0) for i, job_id in enumerate(order)}


class ThreadShare:
    """The intra-op threads of every running job, re-planned as jobs come and go.

    `cores(device)` gives the logical CPUs under a device; `apply(job_id, threads)`
    tells a running job its new count (the executor's `set_threads`).
    """

    def __init__(self, cores: Callable[[str], int], apply: Callable[[str, int], None]) -> None:
        self._cores = cores
        self._apply = apply
        self._jobs: dict[str, _Job] = {}

    def join(self, job_id: str, device: str, role: Role) -> int:
        """Counts a job that is about to start on `device`; returns its threads. The
        jobs already running there are told their smaller share."""
        if is_gpu(device):
            threads = max(1, min(GPU_FEEDER_THREADS, self._cores(device)))
            self._jobs[job_id] = _Job(device, role, threads)
            return threads
        self._jobs[job_id] = _Job(device, role, 1)
        self._replan(device, starting=job_id)
        return self._jobs[job_id].threads

    def leave(self, job_id: str) -> None:
        """Forgets a job that ended; the others on its device get its share. Nothing
        for a job that is not counted."""
        job = self._jobs.pop(job_id, None)
        if job is not None and not is_gpu(job.device):
            self._replan(job.device)

    def pause(self, job_id: str) -> None:
        """A served model is idle: its cores go to the jobs beside it until `resume`."""
        job = self._jobs.get(job_id)
        if job is not None and not job.paused and not is_gpu(job.device):
            job.paused = True
            self._replan(job.device)

    def resume(self, job_id: str) -> None:
        """A paused served model has work again: it gets its share back (and is told)."""
        job = self._jobs.get(job_id)
        if job is not None and job.paused:
            job.paused = False
            self._replan(job.device)

    def paused(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        return job is not None and job.paused

    def threads(self, job_id: str) -> int | None:
        """The threads `job_id` is given now; None if it is not running."""
        job = self._jobs.get(job_id)
        return None if job is None else job.threads

    def snapshot(self) -> dict[str, int]:
        """job id -> threads given, for every running job (for operators and tests)."""
        return {job_id: job.threads for job_id, job in self._jobs.items()}

    def computing(self, device: str) -> dict[str, int]:
        """job id -> threads of the jobs that count on `device` now (not paused)."""
        return {
            job_id: job.threads
            for job_id, job in self._jobs.items()
            if job.device == device and not job.paused
        }

    def _replan(self, device: str, starting: str = "") -> None:
        active = [
            (job_id, job.role)
            for job_id, job in self._jobs.items()
            if job.device == device and not job.paused
        ]
        for job_id, threads in plan(self._cores(device), active).items():
            job = self._jobs[job_id]
            if job.threads == threads and job_id != starting:
                continue
            job.threads = threads
            if job_id != starting:  # a starting job gets its count with the job itself
                try:
                    self._apply(job_id, threads)
                except Exception:  # one job's transport must not stop the others' share
                    log.exception("could not give job %s its %d threads", job_id, threads)
