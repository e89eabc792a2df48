"""The executor seam: what runs admitted jobs, and how it reports back.

The server hands an admitted job to an `Executor` and hears about it only through
its `JobSink` (a `ServingSink` for a serving job, which also takes its replies).
`LocalExecutor` (worker processes on this machine) and `RayExecutor` (warm actors on
a Ray cluster's nodes) both plug in here; nothing above this seam knows which one runs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from engines.jobs import InferenceJob, JobEvent, JobResult, Preemption, ServeJob, TrainingJob
from engines.protocol import PredictBatch, PredictReply


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A training job that yielded its device to a more urgent task (`Executor.preempt`).
    PREEMPTED = "preempted"


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended. `error` is a sentence for the user when it did not succeed.

    `interrupted` marks a failure that is not the job's own: the machine under it went
    away (a Ray node left the cluster). A job that can resume may be queued again.
    `not_started` marks a job that never began because its device could not take it (no
    Ray actor could be placed there): it may be queued again as it was.
    `preemption` (PREEMPTED only) says where the job yielded and the resume point it
    saved; None when it did not yield within the grace period and was stopped by force
    (it then resumes from the newest state it saved).
    """

    outcome: Outcome
    result: JobResult | None = None
    error: str = ""
    interrupted: bool = False
    not_started: bool = False
    preemption: Preemption | None = None


class JobSink(Protocol):
    """Receives what jobs report. Called on the event loop thread, in order per job;
    `job_finished` is called exactly once per job started (`submit` or `serve`), and
    last."""

    def job_event(self, task_id: str, event: JobEvent) -> None: ...

    def job_finished(self, task_id: str, outcome: JobOutcome) -> None: ...


class ServingSink(JobSink, Protocol):
    """A `JobSink` for serving jobs: it also takes their answers."""

    def job_reply(self, task_id: str, reply: PredictReply) -> None:
        """A serving job answered a `PredictBatch` sent with `Executor.send`."""


class Executor(Protocol):
    """Runs jobs on concrete devices (`cpu`, `cuda:N`)."""

    async def start(self) -> None:
        """Prepares warm workers; returns when the executor can take jobs."""

    def submit(self, job: TrainingJob | InferenceJob, sink: JobSink) -> None:
        """Starts `job` on `job.device` without waiting; outcomes go to `sink`."""

    def serve(self, job: ServeJob, sink: ServingSink) -> None:
        """Starts serving `job`'s model on `job.device` without waiting; outcomes go to
        `sink`, and so do the replies to the batches sent with `send`."""

    def cancel(self, task_id: str) -> None:
        """Asks a running job to stop; it is stopped by force after the grace period.
        A job that is not running is ignored."""

    def preempt(self, task_id: str, grace_s: float) -> None:
        """Asks a running training job to yield: save its whole state at its next batch
        boundary and end (outcome PREEMPTED). One that has not ended after `grace_s` is
        stopped by force (PREEMPTED without a resume point). A job that is not running,
        or is being cancelled or preempted already, is ignored."""

    def set_threads(self, task_id: str, threads: int) -> None:
        """Gives a running job `threads` intra-op threads, taken up at its next batch
        boundary (a serving job: before its next forward pass). A job that is not
        running is ignored."""

    def send(self, task_id: str, message: PredictBatch) -> bool:
        """Sends a prediction batch to the serving job `task_id`; False if it is not
        running (its end is, or will be, reported to its sink)."""

    async def close(self) -> None:
        """Stops every worker (running jobs are abandoned, not reported)."""
