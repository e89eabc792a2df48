"""Images per second of training and batch inference in Tandem against the same loop in a
bare script: same model, batch, image size, device (the CPU) and torch thread count.

- Data: an ImageFolder of generated PNGs (4 classes, photo-like colour blobs plus pixel
  noise) in the data dir of a real Tandem server, so both sides pay for PNG decoding
  and the resize/crop/normalise transform in the loop, as a real dataset does.
- Tandem: a `Train` task (resnet18, 64 px, batch 32, SGD, no validation split) or an
  `Infer` task (a random-init resnet18 artifact at 224 px, batch 32, top-5) run by the
  server's warm CPU worker. Its images/s are the task's own metrics: for training, each
  epoch's `images_per_sec` event (the epoch's images over the time of its batch loop,
  checkpoints excluded); for inference, the finished task's `images_per_sec` (the whole
  pass: reading, predicting and writing the predictions file).
- Bare script: the same loop written the plain way (torchvision `ImageFolder`, a
  `DataLoader` without worker processes, forward/backward/step; for inference the files
  opened and batched by hand, top-k written as JSON lines), timed over the same span, in
  a spawned process of its own (as the worker is one), reused across rounds as the
  worker is. It runs with the thread count the server gives the task
  (`TaskManager.threads_for`: the CPU's cores shared by the kind's slots), since a loop
  with more threads than Tandem grants measures the grant, not Tandem, and at the nice
  value the worker gives a batch job (`engines.worker.BATCH_NICE`), since on a machine
  busy with other work a loop at a higher priority measures the priority.
- Turns: each round runs one Tandem task and one bare run back to back, the order flipped
  every round (ABBA), so a slow spell of a shared machine falls on both sides. The
  first epoch of a training run warms up (allocations, first touch of the weights) and
  is not counted on either side; an inference pass is counted whole on both.

The ratio is Tandem's images/s over the bare script's, round by round; the figure is the
median of the rounds' ratios (1.0: the service costs nothing over the loop it runs), and
the images/s figures are each side's median.
"""

from __future__ import annotations

import json
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
from engines.datasets import IMAGENET_MEAN, IMAGENET_STD
from engines.worker import lower_thread_priority
from scheduler import Kind
from tandem.v1 import task_pb2

__all__ = ["FULL", "GOALS", "SMOKE", "Settings", "bare_inference", "bare_training", "run"]

TRAIN_MODEL = "resnet18"
INFER_MODEL = "resnet18"
CLASSES = 4
TOP_K = 5
LEARNING_RATE = 0.01

GOALS = (
    Goal("train_throughput_ratio", minimum=0.97),
    Goal("infer_throughput_ratio", minimum=0.97),
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
# and an inference pass over 64 images at 224 px about 4 s, so each side gets about
# 30 s of counted time in each comparison; about 4 min in all, with the warm-up epochs,
# checkpoints and task starts.
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
    """Images/s of each side in each round (index i of both lists: round i)."""

    tandem: list[float]
    bare: list[float]

    def figures(self, prefix: str) -> dict[str, float]:
        # Medians, and the ratio as the median of each round's own ratio: the two runs
        # of a round are back to back, so a slow spell that hits one round's pair
        # moves one ratio out of several instead of a total.
        ratios = [t / b for t, b in zip(self.tandem, self.bare, strict=True)]
        return {
            f"{prefix}_tandem_images_per_s": statistics.median(self.tandem),
            f"{prefix}_bare_images_per_s": statistics.median(self.bare),
            f"{prefix}_throughput_ratio": statistics.median(ratios),
        }


def measure(settings: Settings) -> dict[str, float]:
    """Training then inference, each in rounds of both sides; see the module docstring."""
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
        bare_ready.result()
        with Tandem(data_dir, prewarm_workers=1) as tandem:
            train_threads = tandem.threads_for("cpu", Kind.TRAINING)
            infer_threads = tandem.threads_for("cpu", Kind.INFERENCE)
            train = _compare_training(tandem, bare, train_folder, settings, train_threads)
            infer = _compare_inference(
                tandem, bare, infer_folder, model_path, Path(tmp), settings, infer_threads
            )
    return {
        **train.figures("train"),
        "train_threads": float(train_threads),
        **infer.figures("infer"),
        "infer_threads": float(infer_threads),
    }


def _in_turns(rounds: int, tandem: Callable[[], float], bare: Callable[[], float]) -> _Rounds:
    """Each side's images/s in each round; ABBA: the side second in one round is first
    in the next."""
    served: list[float] = []
    plain: list[float] = []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            served.append(tandem())
            plain.append(bare())
        else:
            plain.append(bare())
            served.append(tandem())
    return _Rounds(served, plain)


def _counted(rates: list[float], images: int) -> float:
    """images/s over the counted epochs (all but the first) of one run."""
    counted = rates[1:]
    return len(counted) * images / sum(images / rate for rate in counted)


def _compare_training(
    tandem: Tandem, bare: ProcessPoolExecutor, folder: Path, settings: Settings, threads: int
) -> _Rounds:
    images = CLASSES * settings.train_per_class

    def run_tandem() -> float:
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
        )
        rates = _epoch_rates(tandem.events(task.task_id))
        if len(rates) != settings.train_epochs:
            state = task_pb2.TaskState.Name(tandem.get(task.task_id).state)
            raise RuntimeError(f"training task {task.task_id} ended {state} after {rates}")
        return _counted(rates, images)

    def run_bare() -> float:
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

    return _in_turns(settings.train_rounds, run_tandem, run_bare)


def _epoch_rates(events: list[task_pb2.TaskEvent]) -> list[float]:
    """images/s of each epoch, from the end-of-epoch metrics events (progress events
    carry a `batch` too)."""
    return [
        event.metrics["images_per_sec"]
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
    threads: int,
) -> _Rounds:
    def run_tandem() -> float:
        task = tandem.infer(
            model_path=str(model_path),
            dataset=str(folder),
            batch_size=settings.infer_batch,
            top_k=TOP_K,
            device="cpu",
        )
        return tandem.succeeded(task.task_id).metrics["images_per_sec"]

    def run_bare() -> float:
        return bare.submit(
            bare_inference,
            str(folder),
            str(model_path),
            settings.infer_batch,
            threads,
            str(scratch / "bare-predictions.jsonl"),
        ).result()

    return _in_turns(settings.infer_rounds, run_tandem, run_bare)


# -- the bare script: runs in its own spawned process ------------------------------------


def _warm_up() -> None:
    """Nothing: unpickling this function imported the module, torch and torchvision."""


def _as_nice_as_a_batch_job() -> None:
    # Tandem's worker runs batch jobs BATCH_NICE nicer than itself (engines/worker.py);
    # the bare loops match it, or a machine busy with other work would favour them.
    lower_thread_priority()


def bare_training(
    folder: str, model_name: str, image_size: int, batch_size: int, epochs: int, threads: int
) -> list[float]:
    """images/s of each epoch of a plain training loop over the ImageFolder `folder`."""
    _as_nice_as_a_batch_job()
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
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


def bare_inference(folder: str, model_path: str, batch_size: int, threads: int, out: str) -> float:
    """images/s of one plain pass of batch inference over the ImageFolder `folder`, the
    top-k of each image written to `out` as a JSON line."""
    _as_nice_as_a_batch_job()
    torch.set_num_threads(threads)
    artifact = load_artifact(model_path)
    model = torchvision.models.get_model(
        artifact.architecture, weights=None, num_classes=artifact.num_classes
    )
    model.load_state_dict(artifact.state_dict)
    model.eval()
    size = artifact.image_size
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
                scores, indices = torch.softmax(model(torch.stack(inputs)), dim=1).topk(k, dim=1)
            for path, row_scores, row_indices in zip(
                batch, scores.tolist(), indices.tolist(), strict=True
            ):
                predictions = [
                    {"label": artifact.classes[i], "score": s, "index": i}
                    for s, i in zip(row_scores, row_indices, strict=True)
                ]
                rows.write(json.dumps({"file": path, "predictions": predictions}) + "\n")
    return len(files) / (time.monotonic() - started)
