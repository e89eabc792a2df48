"""Dispatch: how long from the arbiter admitting a task to its worker running it.

Measured from the task's own event log, whose timestamps are the server's clock: the
`running on cpu` state event is written the moment the arbiter admits the task, just
before the job is handed to the executor; the next event is the first one the worker
reports (training's "training <model> ... on cpu" line, sent once the model and data
loader are built). Dispatch is the gap between the two: the hand-over to the executor,
the pipe to the worker, the worker starting the job, and the event's way back.

The job is the smallest real training task: squeezenet1_1 (0.7 M parameters) on the
synthetic set at 32 px, one epoch of one batch, no validation. What the job itself does
before it can report (build the model and the loader) is measured apart, in this
process, by running the same `engines.training.train` up to its first event:
`dispatch_job_setup_ms`. It is part of the dispatch figures (a worker cannot say it is
running a job before it has one to run) and shows how much of them is not Tandem's
plumbing.

- warm: one server, one prewarmed CPU worker. The first task goes to that worker as soon
  as it has imported torch and said so (`dispatch_warm_first_ms`: the first job a
  worker runs); the others one after another, each once the previous one has ended
  and its worker is idle again (`dispatch_warm_ms`, the median; `dispatch_warm_p90_ms`).
- cold: a fresh server without prewarmed workers for each sample, so the task's worker
  is spawned when the task is admitted and imports torch before it can start
  (`dispatch_cold_ms`, the median): what the warm pool saves.

`measure(settings, executor)` runs the same tasks through another executor (issue 9's
Ray executor); its figures then carry the executor's name (`dispatch_ray_warm_ms`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    DEFAULT_THREADS,
    LOCAL,
    Tandem,
    event_time,
    figure,
    percentile,
    torch_threads,
)
from bench.report import Goal
from engines import training
from engines.jobs import JobEvent, TrainingJob
from tandem.v1 import task_pb2

__all__ = ["FULL", "GOALS", "SMOKE", "Settings", "dispatch_seconds", "measure", "run"]

MODEL = "squeezenet1_1"
IMAGE_SIZE = 32
# The synthetic set holds 128 images: one batch, so each task ends quickly.
BATCH_SIZE = 128

GOALS = (Goal("dispatch_warm_ms", maximum=50.0),)


@dataclass(frozen=True)
class Settings:
    """Samples of each figure."""

    warm: int
    cold: int
    setup: int


# Each warm sample is a whole (tiny) task, about 0.5 s; each cold one a server start and
# a worker's import of torch, 5 to 15 s on this VM. About 1 min in all.
FULL = Settings(warm=30, cold=3, setup=10)
SMOKE = Settings(warm=2, cold=1, setup=1)


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings, or SMOKE ones that only check the harness."""
    return measure(SMOKE if smoke else FULL)


def measure(settings: Settings, executor: str = LOCAL) -> dict[str, float]:
    """Warm, then cold, then the job's own setup; see the module docstring."""
    with tempfile.TemporaryDirectory(prefix="tandem-bench-dispatch-") as tmp:
        with Tandem(Path(tmp) / "warm", executor=executor, prewarm_workers=1) as tandem:
            tandem.wait_workers_ready("cpu", 1)
            first = _sample(tandem)
            warm = [_sample(tandem) for _ in range(settings.warm)]
        cold = []
        for index in range(settings.cold):
            data_dir = Path(tmp) / f"cold-{index}"
            with Tandem(data_dir, executor=executor, prewarm_workers=0) as tandem:
                cold.append(_sample(tandem))
        # A lone task gets every core from the server's thread share: torch's default.
        setup = [_job_setup(Path(tmp) / "setup", DEFAULT_THREADS) for _ in range(settings.setup)]
    figures = {
        "dispatch_warm_ms": statistics.median(warm) * 1000,
        "dispatch_warm_p90_ms": percentile(warm, 90) * 1000,
        "dispatch_warm_first_ms": first * 1000,
        "dispatch_cold_ms": statistics.median(cold) * 1000,
        "dispatch_job_setup_ms": statistics.median(setup) * 1000,
    }
    return {figure(name, executor): value for name, value in figures.items()}


def _sample(tandem: Tandem) -> float:
    """Submits one task, waits for it to end, returns its dispatch seconds."""
    task = tandem.train(
        model=MODEL,
        dataset="synthetic",
        epochs=1,
        batch_size=BATCH_SIZE,
        image_size=IMAGE_SIZE,
        device="cpu",
        val_split=0.0,
    )
    # Read once the task has ended, so the next sample finds the worker idle again.
    events = tandem.events(task.task_id)
    return dispatch_seconds(events)


def dispatch_seconds(events: list[task_pb2.TaskEvent]) -> float:
    """Seconds from the `running` state event to the event after it (the worker's first)."""
    for index, event in enumerate(events[:-1]):
        if event.type == task_pb2.EVENT_TYPE_STATE and event.state == task_pb2.TASK_STATE_RUNNING:
            return event_time(events[index + 1]) - event_time(event)
    raise RuntimeError(f"no event follows the running state in {[e.message for e in events]}")


class _FirstEvent(Exception):
    """Stops the in-process job at its first event: the setup is what is timed."""


def _job_setup(output_dir: Path, threads: int) -> float:
    """Seconds `engines.training.train` takes, in this process, to its first event."""
    job = TrainingJob(
        task_id="setup",
        model=MODEL,
        dataset="synthetic",
        epochs=1,
        batch_size=BATCH_SIZE,
        learning_rate=1e-3,
        optimizer="adam",
        image_size=IMAGE_SIZE,
        seed=0,
        val_split=0.0,
        device="cpu",
        output_dir=str(output_dir),
        num_threads=threads,
    )

    def emit(event: JobEvent) -> None:
        raise _FirstEvent

    with torch_threads(threads):  # train() sets the process-wide count: put it back after
        started = time.perf_counter()
        try:
            training.train(job, emit, lambda: False)
        except _FirstEvent:
            return time.perf_counter() - started
    raise RuntimeError("training ended without an event")
