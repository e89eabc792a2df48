"""Isolation: Predict's tail latency while a training task runs on the same device (the
CPU), against the same Predicts with the device otherwise idle, under each of the
server's `omp_wait_policy` settings.

- Predict: the Predict benchmark's model and request (random-init resnet18 at 224 px,
  1,000 classes, one 224x224 PNG per request, top-5), one caller in sequence
  (concurrency 1), served by a warm worker with the model loaded.
- Training: a real `Train` task on the CPU at the default limits, run as Tandem runs
  any (the threads the server's work-conserving share gives it, and the worker's
  `BATCH_NICE` for batch jobs, which is what keeps it out of Predict's way on a busy
  machine: bench/README.md, "Isolation"): resnet18 at 64 px, batch 32, over an
  ImageFolder of generated PNGs big enough that no epoch ends (no checkpoint is
  written) during a block. It is submitted before a busy block, the block starts once
  its first progress event says its batch loop is running, and it is cancelled after
  the block. Its images/s over the block come from its progress events (batches done
  between the first and the last event in the block, server timestamps).
- Blocks take turns: idle, busy, idle, busy... so that the shared machine's slow
  spells fall on both. Latencies are pooled per state over the rounds.
- OpenMP: one server per `omp_wait_policy` ("" leaves OMP_WAIT_POLICY unset, then
  "passive", "active"), one after the other, each closed (its workers gone) before the
  next starts: a worker whose OpenMP threads spin would take cores from the next
  server's blocks. So each policy's ratio is measured side by side, but the policies'
  figures against each other are not. The unnamed figures are those of the policy
  `ServerConfig` defaults to.

`isolation_p99_ratio` is busy p99 over idle p99: 1.0 means training beside Predict costs
Predict's slowest answers nothing.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import (
    SERVED_PREFIX,
    Tandem,
    in_batch_loop,
    latency,
    make_png,
    percentile,
    progress_images_per_s,
    server_config,
    write_image_folder,
)
from bench.predict import predict_call, save_predict_model
from bench.report import Goal
from server.config import OMP_WAIT_POLICIES

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


# 300 latencies per state (the p99 is about the 4th slowest); about 1.5 min per policy
# on this VM, 5 min in all.
# 4 x 250 training images: an epoch outlasts a block of 100 Predicts (~7 s).
FULL = Settings(image_size=224, calls=100, rounds=3, warmup=10, train_per_class=250)
SMOKE = Settings(image_size=224, calls=3, rounds=1, warmup=1, train_per_class=24)


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings, or SMOKE ones that only check the harness."""
    return measure(SMOKE if smoke else FULL)


def measure(settings: Settings) -> dict[str, float]:
    """Each OpenMP policy on a server of its own, idle and busy blocks in turns; see the
    module docstring."""
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
        default = server_config(data_dir).omp_wait_policy
        # The default first: it gives the unnamed figures.
        policies = [default] + [policy for policy in OMP_WAIT_POLICIES if policy != default]
        blocks = {
            policy: _measure_policy(settings, data_dir, model_path, folder, png, policy)
            for policy in policies
        }
    figures = blocks[default].figures("isolation")
    for policy, measured in blocks.items():
        figures.update(measured.policy_figures(f"isolation_omp_{policy or 'unset'}"))
    return figures


@dataclass
class _Blocks:
    """What one server's blocks measured: latencies (seconds) per state, the training
    task's images/s per busy block, and the threads each job had while both ran."""

    idle: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    train_rates: list[float] = field(default_factory=list)
    train_threads: list[int] = field(default_factory=list)
    serve_threads: list[int] = field(default_factory=list)

    def ms(self, state: list[float], q: float) -> float:
        return percentile(state, q) * 1000

    def policy_figures(self, prefix: str) -> dict[str, float]:
        # The ratios alone hide a policy that slows the idle side: the latencies too.
        return {
            f"{prefix}_idle_p50_ms": self.ms(self.idle, 50),
            f"{prefix}_busy_p50_ms": self.ms(self.busy, 50),
            f"{prefix}_busy_p99_ms": self.ms(self.busy, 99),
            f"{prefix}_p50_ratio": self.ms(self.busy, 50) / self.ms(self.idle, 50),
            f"{prefix}_p99_ratio": self.ms(self.busy, 99) / self.ms(self.idle, 99),
            f"{prefix}_train_images_per_s": statistics.median(self.train_rates),
        }

    def figures(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_idle_p50_ms": self.ms(self.idle, 50),
            f"{prefix}_idle_p99_ms": self.ms(self.idle, 99),
            f"{prefix}_busy_p50_ms": self.ms(self.busy, 50),
            f"{prefix}_busy_p99_ms": self.ms(self.busy, 99),
            f"{prefix}_p50_ratio": self.ms(self.busy, 50) / self.ms(self.idle, 50),
            f"{prefix}_p99_ratio": self.ms(self.busy, 99) / self.ms(self.idle, 99),
            f"{prefix}_train_images_per_s": statistics.median(self.train_rates),
            f"{prefix}_train_threads": float(statistics.median(self.train_threads)),
            f"{prefix}_serve_threads": float(statistics.median(self.serve_threads)),
        }


def _measure_policy(
    settings: Settings, data_dir: Path, model_path: Path, folder: Path, png: bytes, policy: str
) -> _Blocks:
    # Two warm workers: one serves the model, the other takes the training task.
    with Tandem(data_dir, prewarm_workers=2, omp_wait_policy=policy) as tandem:
        tandem.wait_workers_ready("cpu", 2)
        predict = predict_call(tandem, model_path, png)
        for _ in range(settings.warmup):  # the first call loads the model
            predict()
        blocks = _Blocks()
        for _ in range(settings.rounds):
            blocks.idle.extend(latency(predict) for _ in range(settings.calls))
            _while_training(tandem, folder, predict, settings.calls, blocks)
    return blocks


def _while_training(
    tandem: Tandem, folder: Path, predict: Callable[[], None], calls: int, blocks: _Blocks
) -> None:
    """Predict latencies while a training task runs its batch loop, into `blocks` with
    the task's images/s and both jobs' threads; the task is cancelled (and waited for)
    afterwards."""
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
    tandem.wait_for(task.task_id, in_batch_loop)
    started = time.time()
    blocks.busy.extend(latency(predict) for _ in range(calls))
    ended = time.time()
    shares = tandem.thread_shares()
    blocks.train_threads.append(shares[task.task_id])
    blocks.serve_threads.extend(n for job, n in shares.items() if job.startswith(SERVED_PREFIX))
    tandem.cancel(task.task_id)
    events = tandem.events(task.task_id)  # until it has stopped
    blocks.train_rates.append(progress_images_per_s(events, started, ended, TRAIN_BATCH))
