"""`Executor.preempt` on the local executor, with real worker processes: a training job
yields at its next batch boundary with its resume point; a job that does not yield (batch
inference never does) is stopped when the grace period ends, and its outcome says so."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engines.datasets import SYNTHETIC_CLASSES
from engines.executor import JobOutcome, Outcome
from engines.jobs import InferenceJob, JobEvent, TrainingJob
from engines.local import LocalExecutor
from engines.training_state import load
from tests.engines.test_training import make_job
from tests.harness.models import write_model

TIMEOUT_S = 120


@dataclass
class Sink:
    """Records what the executor reports and wakes whoever waits on it."""

    events: dict[str, list[JobEvent]] = field(default_factory=dict)
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def job_event(self, task_id: str, event: JobEvent) -> None:
        self.events.setdefault(task_id, []).append(event)
        self.changed.set()

    def job_finished(self, task_id: str, outcome: JobOutcome) -> None:
        self.outcomes[task_id] = outcome
        self.changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    def reported_progress(self, task_id: str, metric: str) -> bool:
        """Whether the job has reported `metric` (`batch` for training, `images` for
        inference): it is in its loop."""
        return any(metric in e.metrics for e in self.events.get(task_id, []))


def _training(tmp_path: Path) -> TrainingJob:
    """A training many epochs long: it is asked to yield long before it could end."""
    return make_job(tmp_path, model="mobilenet_v3_small", epochs=50, batch_size=8, optimizer="sgd")


def _inference(tmp_path: Path) -> InferenceJob:
    """Batch inference over the synthetic set at 1024 px, one image a pass: seconds long
    on any machine (it is stopped within a fraction of a second of its first report)."""
    model = write_model(tmp_path / "model.pt", "resnet18", SYNTHETIC_CLASSES, 1024)
    return InferenceJob(
        task_id="infer",
        model_path=str(model),
        dataset="synthetic",
        batch_size=1,
        top_k=1,
        device="cpu",
        output_dir=str(tmp_path / "infer"),
    )


def _preempt_in_its_loop(
    job: TrainingJob | InferenceJob, metric: str, grace_s: float
) -> tuple[JobOutcome, int]:
    """Runs `job` on a real worker, preempts it once it has reported `metric` (it is in
    its loop), and returns how it ended and its worker's pid."""

    async def run() -> tuple[JobOutcome, int]:
        executor = LocalExecutor(prewarm={"cpu": 1})
        await executor.start()
        sink = Sink()
        try:
            executor.submit(job, sink)
            await sink.until(lambda: sink.reported_progress(job.task_id, metric))
            pid = executor.running()[job.task_id]
            assert pid is not None
            executor.preempt(job.task_id, grace_s=grace_s)
            await sink.until(lambda: job.task_id in sink.outcomes)
        finally:
            await executor.close()
        return sink.outcomes[job.task_id], pid

    return asyncio.run(run())


def test_a_training_job_yields_with_its_resume_point(tmp_path: Path) -> None:
    outcome, _ = _preempt_in_its_loop(_training(tmp_path), "batch", grace_s=TIMEOUT_S)
    assert outcome.outcome is Outcome.PREEMPTED
    assert outcome.preemption is not None
    assert outcome.preemption.epoch >= 1 and outcome.preemption.save_seconds >= 0
    assert load(outcome.preemption.checkpoint).epoch == outcome.preemption.epoch


def test_a_job_that_does_not_yield_is_stopped_after_the_grace_period(tmp_path: Path) -> None:
    outcome, pid = _preempt_in_its_loop(_inference(tmp_path), "images", grace_s=0.2)
    assert outcome.outcome is Outcome.PREEMPTED
    assert outcome.preemption is None  # stopped, not yielded: no resume point
    assert "did not yield in time and was stopped" in outcome.error
    assert not os.path.exists(f"/proc/{pid}")  # its worker was killed
