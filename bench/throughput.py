"""Images per second of training and batch inference in Tandem against the same loop in a
bare script: same model, batch, image size and device (the CPU).

- Data: an ImageFolder of generated PNGs (4 classes, photo-like colour blobs plus pixel
  noise) in the data dir of a real Tandem server, so both sides pay for PNG decoding
  and the resize/crop/normalise transform in the loop, as a real dataset does.
- Tandem: a `Train` task (resnet18, 64 px, batch 32, SGD, no validation split) or an
  `Infer` task (a random-init resnet18 artifact at 224 px, batch 32, top-5) run alone by
  the server's warm CPU worker. Its images/s and threads are the task's own metrics: for
  training, each epoch's `images_per_sec` and `threads` (the epoch's images over the
  time of its batch loop, checkpoints excluded); for inference, the finished task's
  (the whole pass: reading, predicting and writing the predictions file).
- Bare script: the same loop written the plain way (torchvision `ImageFolder`, a
  `DataLoader` without worker processes, forward/backward/step; for inference the files
  opened and batched by hand, top-k written as JSON lines), timed over the same span, in
  a spawned process of its own (as the worker is one), reused across rounds as the
  worker is, at the nice value the worker gives a batch job
  (`engines.worker.BATCH_NICE`), since on a machine busy with other work a loop at a
  higher priority measures the priority. It runs twice per round:
  - with torch's default threads (every core, no `torch.set_num_threads`): the
    machine's limit, what a lone job should reach (`..._lone_vs_bare`);
  - pinned to the threads the Tandem task ran with (its `threads` metric), which
    measures Tandem's own overhead apart from its thread share (`..._pinned_ratio`).
    When that count is torch's default the two runs would be the same run, so the
    default one stands for both.
- Turns: each round runs the sides back to back, the order reversed every round
  (ABBA), so a slow spell of a shared machine falls on every side. The first epoch of
  a training run warms up (allocations, first touch of the weights) and is not counted
  on either side; an inference pass is counted whole on both.

Each ratio is Tandem's images/s over a bare side's, round by round; the figure is the
median of the rounds' ratios (1.0: the service costs nothing over the loop it runs), and
the images/s figures are each side's median.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from bench.harness import SEED, Tandem, save_model, write_image_folder
from bench.report import Goal
from engines.artifacts import load_artifact
from engines.augment import LIGHT_CROP_SCALE
from engines.datasets import IMAGENET_MEAN, IMAGENET_STD
from engines.prepared_model import prepare_for_inference
from engines.worker import lower_thread_priority
from tandem.v1 import task_pb2

__all__ = ["FULL", "GOALS", "SMOKE", "Settings", "bare_inference", "bare_training", "run"]

TRAIN_MODEL = "resnet18"
INFER_MODEL = "resnet18"
CLASSES = 4
TOP_K = 5
LEARNING_RATE = 0.01

GOALS = (
    Goal("train_lone_vs_bare", minimum=0.95),
    Goal("train_pinned_ratio", minimum=0.97),
    Goal("infer_lone_vs_bare", minimum=0.95),
    Goal("infer_pinned_ratio", minimum=0.97),
)


@dataclass(frozen=True)
class Settings:
    """Sizes: images are per class (4 classes); epochs per training run, the first of
    which is warm-up; rounds of (Tandem, bare) runs."""

    train_image_size: int
    train_batch: int
    train_per_class: int
    train_epochs: int
    train_rounds: int
    infer_image_size: int
    infer_batch: int
    infer_per_class: int
    infer_rounds: int


# On this 2-core VM at one thread: a training epoch of 240 images at 64 px is about 3 s
# and an inference pass over 64 images at 224 px about 4 s (less with both cores), so
# each side gets about 30 s of counted time in each comparison; about 4 min in all, with
# the warm-up epochs, checkpoints and task starts (more where a pinned run is needed).
FULL = Settings(
    train_image_size=64,
    train_batch=32,
    train_per_class=60,
    train_epochs=3,
    train_rounds=5,
    infer_image_size=224,
    infer_batch=32,
    infer_per_class=16,
    infer_rounds=8,
)
SMOKE = Settings(
    train_image_size=32,
    train_batch=8,
    train_per_class=4,
    train_epochs=2,
    train_rounds=1,
    infer_image_size=32,
    infer_batch=8,
    infer_per_class=2,
    infer_rounds=1,
)


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings, or SMOKE ones that only check the harness."""
    return measure(SMOKE if smoke else FULL)


@dataclass(frozen=True)
class _Rounds:
    """Each side's images/s in each round (index i of every list: round i), and the
    threads the Tandem task ran with."""

    tandem: list[float]
    bare: list[float]
    pinned: list[float]
    threads: list[float]
    bare_threads: int

    def figures(self, prefix: str) -> dict[str, float]:
        # Medians, and each ratio as the median of each round's own ratio: the runs of
        # a round are back to back, so a slow spell that hits one round moves one ratio
        # out of several instead of a total.
        def ratio(bare: list[float]) -> float:
            return statistics.median(t / b for t, b in zip(self.tandem, bare, strict=True))

        return {
            f"{prefix}_tandem_images_per_s": statistics.median(self.tandem),
            f"{prefix}_bare_images_per_s": statistics.median(self.bare),
            f"{prefix}_bare_pinned_images_per_s": statistics.median(self.pinned),
            f"{prefix}_lone_vs_bare": ratio(self.bare),
            f"{prefix}_pinned_ratio": ratio(self.pinned),
            f"{prefix}_threads": statistics.median(self.threads),
            f"{prefix}_bare_threads": float(self.bare_threads),
        }


# A bare run: threads to pin it to, or None for torch's default; returns images/s.
_Bare = Callable[[int | None], float]


def measure(settings: Settings) -> dict[str, float]:
    """Training then inference, each in rounds of every side; see the module docstring."""
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="tandem-bench-throughput-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=spawn) as bare,
    ):
        # Started now so that its import of torch overlaps the server's worker's.
        bare_ready = bare.submit(_warm_up)
        data_dir = Path(tmp) / "data"
        datasets = data_dir / "datasets"  # the server's default dataset root
        train_folder = write_image_folder(
            datasets / "train",
            classes=CLASSES,
            per_class=settings.train_per_class,
            size=settings.train_image_size,
        )
        infer_folder = write_image_folder(
            datasets / "infer",
            classes=CLASSES,
            per_class=settings.infer_per_class,
            size=settings.infer_image_size,
        )
        model_path = save_model(
            data_dir / "models" / "infer.pt", INFER_MODEL, CLASSES, settings.infer_image_size
        )
        bare_threads = bare_ready.result()
        with Tandem(data_dir, prewarm_workers=1) as tandem:
            train = _compare_training(tandem, bare, train_folder, settings, bare_threads)
            infer = _compare_inference(
                tandem, bare, infer_folder, model_path, Path(tmp), settings, bare_threads
            )
    return {**train.figures("train"), **infer.figures("infer")}


def _in_turns(
    rounds: int, tandem: Callable[[], tuple[float, float]], bare: _Bare, bare_threads: int
) -> _Rounds:
    """Each side's images/s in each round. `tandem` returns (images/s, threads it ran
    with). ABBA: round 0 runs Tandem, bare, pinned; round 1 the reverse, and so on.
    Round 0 starts with Tandem, so the pinned count is known by the pinned run's turn."""
    served: list[float] = []
    plain: list[float] = []
    pinned: list[float] = []
    threads: list[float] = []
    for round_ in range(rounds):
        order = ("tandem", "bare", "pinned")
        for side in order if round_ % 2 == 0 else reversed(order):
            if side == "tandem":
                rate, count = tandem()
                served.append(rate)
                threads.append(count)
            elif side == "bare":
                plain.append(bare(None))
            else:
                count = round(statistics.median(threads))
                # At torch's default count the pinned run is the default run: one is enough.
                pinned.append(bare(count) if count != bare_threads else math.nan)
    # NaN marks a pinned run that the same round's default run stands for.
    pinned = [b if math.isnan(p) else p for p, b in zip(pinned, plain, strict=True)]
    return _Rounds(served, plain, pinned, threads, bare_threads)


def _counted(rates: list[float], images: int) -> float:
    """images/s over the counted epochs (all but the first) of one run."""
    counted = rates[1:]
    return len(counted) * images / sum(images / rate for rate in counted)


def _compare_training(
    tandem: Tandem, bare: ProcessPoolExecutor, folder: Path, settings: Settings, bare_threads: int
) -> _Rounds:
    images = CLASSES * settings.train_per_class

    def run_tandem() -> tuple[float, float]:
        task = tandem.train(
            model=TRAIN_MODEL,
            dataset=str(folder),
            epochs=settings.train_epochs,
            batch_size=settings.train_batch,
            learning_rate=LEARNING_RATE,
            optimizer="sgd",
            image_size=settings.train_image_size,
            device="cpu",
            seed=SEED,
            val_split=0.0,
            # The bare loop's recipe: a constant rate, plain cross-entropy.
            lr_schedule="constant",
            label_smoothing=0.0,
        )
        epochs = _epoch_metrics(tandem.events(task.task_id))
        if len(epochs) != settings.train_epochs:
            state = task_pb2.TaskState.Name(tandem.get(task.task_id).state)
            raise RuntimeError(f"training task {task.task_id} ended {state} after {epochs}")
        rate = _counted([epoch["images_per_sec"] for epoch in epochs], images)
        return rate, statistics.mean(epoch["threads"] for epoch in epochs[1:])

    def run_bare(threads: int | None) -> float:
        rates = bare.submit(
            bare_training,
            str(folder),
            TRAIN_MODEL,
            settings.train_image_size,
            settings.train_batch,
            settings.train_epochs,
            threads,
        ).result()
        return _counted(rates, images)

    return _in_turns(settings.train_rounds, run_tandem, run_bare, bare_threads)


def _epoch_metrics(events: list[task_pb2.TaskEvent]) -> list[dict[str, float]]:
    """The metrics of each epoch, from the end-of-epoch metrics events (progress events
    carry a `batch` too)."""
    return [
        dict(event.metrics)
        for event in events
        if event.type == task_pb2.EVENT_TYPE_METRICS
        and "images_per_sec" in event.metrics
        and "batch" not in event.metrics
    ]


def _compare_inference(
    tandem: Tandem,
    bare: ProcessPoolExecutor,
    folder: Path,
    model_path: Path,
    scratch: Path,
    settings: Settings,
    bare_threads: int,
) -> _Rounds:
    def run_tandem() -> tuple[float, float]:
        task = tandem.infer(
            model_path=str(model_path),
            dataset=str(folder),
            batch_size=settings.infer_batch,
            top_k=TOP_K,
            device="cpu",
        )
        metrics = tandem.succeeded(task.task_id).metrics
        return metrics["images_per_sec"], metrics["threads"]

    def run_bare(threads: int | None) -> float:
        return bare.submit(
            bare_inference,
            str(folder),
            str(model_path),
            settings.infer_batch,
            threads,
            str(scratch / "bare-predictions.jsonl"),
        ).result()

    return _in_turns(settings.infer_rounds, run_tandem, run_bare, bare_threads)


# -- the bare script: runs in its own spawned process ------------------------------------


# Read when the bare process imports this module, before anything sets it.
_DEFAULT_THREADS = torch.get_num_threads()


def _warm_up() -> int:
    """torch's default threads here; unpickling this function imported the module, torch
    and torchvision."""
    return _DEFAULT_THREADS


def _use_threads(threads: int | None) -> None:
    # The process is reused across runs: put the default back for a default run.
    torch.set_num_threads(_DEFAULT_THREADS if threads is None else threads)


def _as_nice_as_a_batch_job() -> None:
    # Tandem's worker runs batch jobs BATCH_NICE nicer than itself (engines/worker.py);
    # the bare loops match it, or a machine busy with other work would favour them.
    lower_thread_priority()


def bare_training(
    folder: str,
    model_name: str,
    image_size: int,
    batch_size: int,
    epochs: int,
    threads: int | None,
    augment: bool = False,
) -> list[float]:
    """images/s of each epoch of a plain training loop over the ImageFolder `folder`, with
    `threads` intra-op threads (None: torch's default); with `augment`, the transforms of
    Tandem's `augment: light` (a random resized crop at the job's size and a flip)."""
    _as_nice_as_a_batch_job()
    _use_threads(threads)
    torch.manual_seed(SEED)
    augmentation = [
        transforms.RandomResizedCrop(image_size, scale=LIGHT_CROP_SCALE),
        transforms.RandomHorizontalFlip(),
    ]
    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            *(augmentation if augment else []),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(folder, transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(SEED),
    )
    model = torchvision.models.get_model(model_name, weights=None, num_classes=len(dataset.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    rates = []
    for _ in range(epochs):
        images = 0
        started = time.monotonic()
        for inputs, labels in loader:
            loss = criterion(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(labels)
        rates.append(images / (time.monotonic() - started))
    return rates


def bare_inference(
    folder: str, model_path: str, batch_size: int, threads: int | None, out: str
) -> float:
    """images/s of one plain pass of batch inference over the ImageFolder `folder`, the
    top-k of each image written to `out` as a JSON line; `threads` as `bare_training`."""
    _as_nice_as_a_batch_job()
    _use_threads(threads)
    artifact = load_artifact(model_path)
    model = torchvision.models.get_model(
        artifact.architecture, weights=None, num_classes=artifact.num_classes
    )
    model.load_state_dict(artifact.state_dict)
    size = artifact.image_size
    # The network prepared as Tandem's batch inference prepares it (batch norm folded,
    # channels-last): the same work, so the ratio shows Tandem's own cost.
    prepared = prepare_for_inference(model.eval(), torch.device("cpu"), size)
    model, layout = prepared.module, prepared.memory_format
    transform = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(artifact.mean, artifact.std),
        ]
    )
    files = [path for path, _ in torchvision.datasets.ImageFolder(folder).samples]
    k = min(TOP_K, artifact.num_classes)
    started = time.monotonic()
    with open(out, "w", encoding="utf-8") as rows:
        for first in range(0, len(files), batch_size):
            batch = files[first : first + batch_size]
            inputs = []
            for path in batch:
                with Image.open(path) as image:
                    inputs.append(transform(image.convert("RGB")))
            with torch.inference_mode():
                logits = model(torch.stack(inputs).contiguous(memory_format=layout))
                scores, indices = torch.softmax(logits, dim=1).topk(k, dim=1)
            for path, row_scores, row_indices in zip(
                batch, scores.tolist(), indices.tolist(), strict=True
            ):
                predictions = [
                    {"label": artifact.classes[i], "score": s, "index": i}
                    for s, i in zip(row_scores, row_indices, strict=True)
                ]
                rows.write(json.dumps({"file": path, "predictions": predictions}) + "\n")
    return len(files) / (time.monotonic() - started)
