"""What the training recipe costs on the CPU: augmentation, and bf16 against fp32.

- Augmentation: a `Train` task with `augment: light` (resnet18, 64 px, batch 32, SGD,
  constant rate, plain cross-entropy, no validation split) against the bare training
  loop of `bench.throughput` with the same transforms (the job's resize and centre
  crop, then a random resized crop at the job's size and a horizontal flip, in the
  dataset's transform as a user writes it) and torch's default threads.
  `recipe_augment_light_vs_bare` is Tandem's images/s over the bare loop's: Tandem
  draws each image's augmentation from its own seeded generator (so that a preempted
  run resumes exactly), which must cost next to nothing (goal >= 0.95).
- Precision: the same task in `bf16` and in `fp32`, side by side;
  `recipe_bf16_vs_fp32` is bf16's images/s over fp32's. Reported, no goal: whether
  bf16 pays on a CPU depends on its instructions (AMX, AVX-512 BF16), and without
  them autocast's casts only cost.

Both in ABBA turns, the first epoch of each run not counted (warm-up), each figure the
median of the rounds' ratios, as in `bench.throughput`.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import SEED, Tandem, write_image_folder
from bench.report import Goal
from bench.throughput import _counted, _epoch_metrics, _warm_up, bare_training
from tandem.v1 import task_pb2

__all__ = ["FULL", "GOALS", "SMOKE", "run"]

MODEL = "resnet18"
CLASSES = 4
LEARNING_RATE = 0.01

GOALS = (Goal("recipe_augment_light_vs_bare", minimum=0.95),)


@dataclass(frozen=True)
class Settings:
    image_size: int
    batch: int
    per_class: int
    epochs: int
    rounds: int


# An epoch of 240 images at 64 px is about 3 s on this 2-core VM: about 3 min in all.
FULL = Settings(image_size=64, batch=32, per_class=60, epochs=3, rounds=5)
SMOKE = Settings(image_size=32, batch=8, per_class=4, epochs=2, rounds=1)


def run(smoke: bool) -> dict[str, float]:
    return measure(SMOKE if smoke else FULL)


def _ab(rounds: int, first: Callable[[], float], second: Callable[[], float]) -> list[float]:
    """first/second in each round, the order reversed every round."""
    ratios = []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            a, b = first(), second()
        else:
            b, a = second(), first()
        ratios.append(a / b)
    return ratios


def measure(settings: Settings) -> dict[str, float]:
    spawn = multiprocessing.get_context("spawn")
    images = CLASSES * settings.per_class
    rates: dict[str, list[float]] = {"tandem": [], "bare": [], "bf16": [], "fp32": []}
    with (
        tempfile.TemporaryDirectory(prefix="tandem-bench-recipe-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=spawn) as bare,
    ):
        bare_ready = bare.submit(_warm_up)
        data_dir = Path(tmp) / "data"
        folder = write_image_folder(
            data_dir / "datasets" / "train",
            classes=CLASSES,
            per_class=settings.per_class,
            size=settings.image_size,
        )
        bare_ready.result()
        with Tandem(data_dir, prewarm_workers=1) as tandem:

            def train(side: str, **recipe: Any) -> float:
                task = tandem.train(
                    model=MODEL,
                    dataset=str(folder),
                    epochs=settings.epochs,
                    batch_size=settings.batch,
                    learning_rate=LEARNING_RATE,
                    optimizer="sgd",
                    image_size=settings.image_size,
                    device="cpu",
                    seed=SEED,
                    val_split=0.0,
                    lr_schedule="constant",
                    label_smoothing=0.0,
                    **recipe,
                )
                epochs = _epoch_metrics(tandem.events(task.task_id))
                if len(epochs) != settings.epochs:
                    state = task_pb2.TaskState.Name(tandem.get(task.task_id).state)
                    raise RuntimeError(f"training task {task.task_id} ended {state}")
                rate = _counted([epoch["images_per_sec"] for epoch in epochs], images)
                rates[side].append(rate)
                return rate

            def run_bare() -> float:
                per_epoch = bare.submit(
                    bare_training,
                    str(folder),
                    MODEL,
                    settings.image_size,
                    settings.batch,
                    settings.epochs,
                    None,
                    True,
                ).result()
                rate = _counted(per_epoch, images)
                rates["bare"].append(rate)
                return rate

            augment = _ab(settings.rounds, lambda: train("tandem", augment="light"), run_bare)
            precision = _ab(
                settings.rounds,
                lambda: train("bf16", precision="bf16"),
                lambda: train("fp32", precision="fp32"),
            )
    return {
        "recipe_augment_tandem_images_per_s": statistics.median(rates["tandem"]),
        "recipe_augment_bare_images_per_s": statistics.median(rates["bare"]),
        "recipe_augment_light_vs_bare": statistics.median(augment),
        "recipe_bf16_images_per_s": statistics.median(rates["bf16"]),
        "recipe_fp32_images_per_s": statistics.median(rates["fp32"]),
        "recipe_bf16_vs_fp32": statistics.median(precision),
    }
