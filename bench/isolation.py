"""Isolation: Predict's tail latency while a training task runs on the same device (the
CPU), against the same Predicts with the device otherwise idle.

- Predict: the Predict benchmark's model and request (random-init resnet18 at 224 px,
  1,000 classes, one 224x224 PNG per request, top-5), one caller in sequence
  (concurrency 1), served by a warm worker with the model loaded.
- Training: a real `Train` task on the CPU at the default limits, run as Tandem runs
  any (the thread count `TaskManager.threads_for` gives training, and the worker's
  `BATCH_NICE` for batch jobs, which is what keeps it out of Predict's way on a busy
  machine: bench/README.md, "Isolation"): resnet18 at 64 px, batch 32, over an
  ImageFolder of generated PNGs big enough that no epoch ends (no checkpoint is
  written) during a block. It is submitted before a busy block, the block starts once
  its first progress event says its batch loop is running, and it is cancelled after
  the block.
- Blocks take turns: idle, busy, idle, busy... so that the shared machine's slow
  spells fall on both. Latencies are pooled per state over the rounds.

`isolation_p99_ratio` is busy p99 over idle p99: 1.0 means training beside Predict costs
Predict's slowest answers nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Tandem, latency, make_png, percentile, write_image_folder
from bench.predict import predict_call, save_predict_model
from bench.report import Goal
from scheduler import Kind
from tandem.v1 import task_pb2

__all__ = ["FULL", "GOALS", "SMOKE", "Settings", "measure", "run"]

TRAIN_MODEL = "resnet18"
TRAIN_IMAGE_SIZE = 64
TRAIN_BATCH = 32

GOALS = (Goal("isolation_p99_ratio", maximum=1.5),)


@dataclass(frozen=True)
class Settings:
    """Calls per block, rounds of (idle, busy) blocks, and the training set's size."""

    image_size: int
    calls: int
    rounds: int
    warmup: int
    train_per_class: int


# 300 latencies per state (the p99 is about the 4th slowest); about 1.5 min on this VM.
# 4 x 250 training images: an epoch outlasts a block of 100 Predicts (~7 s).
FULL = Settings(image_size=224, calls=100, rounds=3, warmup=10, train_per_class=250)
SMOKE = Settings(image_size=224, calls=3, rounds=1, warmup=1, train_per_class=24)


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings, or SMOKE ones that only check the harness."""
    return measure(SMOKE if smoke else FULL)


def measure(settings: Settings) -> dict[str, float]:
    """Idle and busy blocks in turns; see the module docstring."""
    png = make_png(224)
    with tempfile.TemporaryDirectory(prefix="tandem-bench-isolation-") as tmp:
        data_dir = Path(tmp) / "data"
        model_path = save_predict_model(data_dir, settings.image_size)
        folder = write_image_folder(
            data_dir / "datasets" / "train",
            classes=4,
            per_class=settings.train_per_class,
            size=TRAIN_IMAGE_SIZE,
        )
        # Two warm workers: one serves the model, the other takes the training task.
        with Tandem(data_dir, prewarm_workers=2) as tandem:
            tandem.wait_workers_ready("cpu", 2)
            predict = predict_call(tandem, model_path, png)
            for _ in range(settings.warmup):  # the first call loads the model
                predict()
            idle: list[float] = []
            busy: list[float] = []
            for _ in range(settings.rounds):
                idle.extend(latency(predict) for _ in range(settings.calls))
                busy.extend(_while_training(tandem, folder, predict, settings.calls))
            train_threads = tandem.threads_for("cpu", Kind.TRAINING)
            serve_threads = tandem.threads_for("cpu", Kind.INFERENCE)

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    return {
        "isolation_idle_p50_ms": ms(idle, 50),
        "isolation_idle_p99_ms": ms(idle, 99),
        "isolation_busy_p50_ms": ms(busy, 50),
        "isolation_busy_p99_ms": ms(busy, 99),
        "isolation_p50_ratio": ms(busy, 50) / ms(idle, 50),
        "isolation_p99_ratio": ms(busy, 99) / ms(idle, 99),
        "isolation_train_threads": float(train_threads),
        "isolation_serve_threads": float(serve_threads),
    }


def _while_training(
    tandem: Tandem, folder: Path, predict: Callable[[], None], calls: int
) -> list[float]:
    """Predict latencies while a training task runs its batch loop; the task is
    cancelled (and waited for) afterwards."""
    task = tandem.train(
        model=TRAIN_MODEL,
        dataset=str(folder),
        epochs=100,  # never reached: cancelled after the block
        batch_size=TRAIN_BATCH,
        image_size=TRAIN_IMAGE_SIZE,
        optimizer="sgd",
        device="cpu",
        val_split=0.0,
    )
    tandem.wait_for(task.task_id, _in_batch_loop)
    latencies = [latency(predict) for _ in range(calls)]
    tandem.cancel(task.task_id)
    tandem.events(task.task_id)  # until it has stopped
    return latencies


def _in_batch_loop(event: task_pb2.TaskEvent) -> bool:
    if event.type == task_pb2.EVENT_TYPE_STATE and event.state not in (
        task_pb2.TASK_STATE_QUEUED,
        task_pb2.TASK_STATE_RUNNING,
    ):
        raise RuntimeError(f"the training task ended before its batch loop: {event.message}")
    return event.type == task_pb2.EVENT_TYPE_METRICS and "batch" in event.metrics
