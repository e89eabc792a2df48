"""Messages on the pipe between the server (parent) and a worker process (child).

Parent -> child: `RunJob`, `CancelJob`, `YieldJob`, `SetThreads`, `Shutdown`, and
`PredictBatch` to a worker serving a model.
Child -> parent: `WorkerReady` once torch is imported, then for each job any number
of `JobEventMsg` (and `PredictReply`, one per `PredictBatch`, for a serving job)
followed by exactly one of `JobDone`, `JobFailed`, `JobCancelledMsg`,
`JobPreemptedMsg`.
A child that dies mid-job sends nothing more: the parent sees its exit instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engines.jobs import (
    InferenceJob,
    JobEvent,
    JobResult,
    Pixels,
    Prediction,
    Preemption,
    ServeJob,
    TrainingJob,
)

Job = TrainingJob | InferenceJob | ServeJob


@dataclass(frozen=True)
class RunJob:
    job: Job


@dataclass(frozen=True)
class CancelJob:
    task_id: str


@dataclass(frozen=True)
class YieldJob:
    """Asks a training job to save its whole state at its next batch boundary and end
    (a more urgent task needs its device); other jobs ignore it."""

    task_id: str


@dataclass(frozen=True)
class SetThreads:
    """The job's new intra-op thread count, for its next batch or forward pass."""

    task_id: str
    threads: int


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class PredictBatch:
    """Images for the model a serving job holds (encoded files, or tensors a caller has
    preprocessed); answered by one `PredictReply`."""

    task_id: str
    batch_id: int
    images: list[bytes | Pixels]
    top_k: int
    # Also answer each image's whole probability vector (the Open Inference Protocol's
    # output); Predict needs only the top-k.
    probabilities: bool = False


@dataclass(frozen=True)
class PredictReply:
    """Per image of the batch, in order: its predictions, or why it could not be read;
    and, when the batch asked for them, each image's probabilities (float32 bytes, one
    per class; empty for an image that could not be read)."""

    task_id: str
    batch_id: int
    results: list[list[Prediction] | str]
    probabilities: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class WorkerReady:
    pid: int


@dataclass(frozen=True)
class JobEventMsg:
    task_id: str
    event: JobEvent


@dataclass(frozen=True)
class JobDone:
    task_id: str
    result: JobResult


@dataclass(frozen=True)
class JobFailed:
    task_id: str
    # A sentence for the user.
    reason: str
    # The child's traceback, for the server log; empty for expected failures.
    traceback: str = ""


@dataclass(frozen=True)
class JobCancelledMsg:
    task_id: str


@dataclass(frozen=True)
class JobPreemptedMsg:
    """The job yielded as asked: where, and the resume point it saved."""

    task_id: str
    preemption: Preemption


ToWorker = RunJob | CancelJob | YieldJob | SetThreads | Shutdown | PredictBatch
FromWorker = (
    WorkerReady
    | JobEventMsg
    | PredictReply
    | JobDone
    | JobFailed
    | JobCancelledMsg
    | JobPreemptedMsg
)
