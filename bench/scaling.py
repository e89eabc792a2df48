"""Scaling: Predict throughput, training throughput and the server's memory with 1, 2 and
4 tasks at once on the `cpu` device, in one run against one server.

- Server: a real `tandem serve` process on loopback (port 0, one prewarmed worker), so
  its memory is its own: `scale_rss_N_mb` is the server process's resident set
  (VmRSS), the highest sampled at the end of level N's training and Predict windows.
  Workers are processes of their own; `scale_workers_pss_N_mb` is their proportional
  set sizes (PSS: a page shared by k processes counts 1/k in each, so torch's libraries
  count once) summed over every descendant of the server at the same moments,
  including idle workers the pool keeps from an earlier level. The CPU's training
  limit is raised to 4 with `UpdateLimits` so 4 trainings fit (the inference limit
  is 4 by default).
- Training, level N: N `Train` tasks at once (resnet18, 64 px, batch 32, SGD, over an
  ImageFolder of generated PNGs big enough that no epoch ends during the window).
  Once every task has reported its first progress event (its batch loop runs, with
  its share of the cores), a window of `window_s`; then all are cancelled. Each
  task's images/s are the batches done between its first and last progress event in
  the window (server timestamps); `scale_train_N_images_per_s` is their sum,
  `..._per_task_images_per_s` their mean, `..._threads` the mean threads the tasks
  ran with (their progress events' `threads`).
- Predict, level N: N served models (the Predict benchmark's resnet18 at 224 px, one
  file each, so each is a served model in a worker of its own), each called by 8
  threads at once (concurrency 8 per model) for `window_s`; answers/s are the calls
  answered within the window over it, summed over the models.
- Levels run 1, 2, 4, training first then Predict (the trainings' workers are then
  idle and take the served models).

On a 2-core machine the sums should stay flat past 1 task (the cores are the limit)
while the server's memory stays flat and the workers' grows by one model per task.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    TandemClient,
    in_batch_loop,
    make_png,
    progress_images_per_s,
    save_model,
    write_image_folder,
)
from bench.predict import ARCHITECTURE, NUM_CLASSES, predict_call
from bench.report import Goal
from tandem.v1 import task_pb2
from tests.harness.served import ServedProcess

__all__ = ["FULL", "GOALS", "LEVELS", "SMOKE", "Settings", "measure", "run"]

LEVELS = (1, 2, 4)
CONCURRENCY = 8  # callers per served model
TRAIN_MODEL = "resnet18"
TRAIN_IMAGE_SIZE = 64
TRAIN_BATCH = 32
CLASSES = 4

GOALS: tuple[Goal, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Seconds each level's training and Predict windows last, the training set's size
    and Predict's image size, and warm-up calls per served model."""

    window_s: float
    train_per_class: int
    image_size: int
    warmup: int


# 3 levels x 2 windows of 10 s, plus the server's start, 3 cold workers and 4 model
# loads: about 2 min on this 2-core VM. 4 x 400 training images: an epoch of the lone
# task (about 100 images/s) outlasts a window.
FULL = Settings(window_s=10.0, train_per_class=400, image_size=224, warmup=2)
SMOKE = Settings(window_s=1.0, train_per_class=24, image_size=224, warmup=1)


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings, or SMOKE ones that only check the harness."""
    return measure(SMOKE if smoke else FULL)


def measure(settings: Settings) -> dict[str, float]:
    """Training levels, then Predict levels, against one `tandem serve`; see the module
    docstring."""
    png = make_png(224)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tandem-bench-scaling-") as tmp:
        data_dir = Path(tmp) / "data"
        folder = write_image_folder(
            data_dir / "datasets" / "train",
            classes=CLASSES,
            per_class=settings.train_per_class,
            size=TRAIN_IMAGE_SIZE,
        )
        models = [
            save_model(
                data_dir / "models" / f"model-{index}.pt",
                ARCHITECTURE,
                NUM_CLASSES,
                settings.image_size,
            )
            for index in range(max(LEVELS))
        ]
        env = {"TANDEM_PREWARM_WORKERS": "1"}
        with ServedProcess(data_dir, "--host", "127.0.0.1", env=env) as served:
            client = TandemClient(served.grpc_address)
            try:
                client.set_limits("cpu", training=max(LEVELS), inference=max(LEVELS))
                memory = _Memory(served.pid)
                for level in LEVELS:
                    figures.update(_training(client, folder, level, settings))
                    memory.sample(level)
                for level in LEVELS:
                    figures.update(_predict(client, models[:level], png, settings))
                    memory.sample(level)
            finally:
                client.close()
    figures.update(memory.figures())
    return figures


def _training(
    client: TandemClient, folder: Path, level: int, settings: Settings
) -> dict[str, float]:
    tasks = [
        client.train(
            model=TRAIN_MODEL,
            dataset=str(folder),
            epochs=100,  # never reached: cancelled after the window
            batch_size=TRAIN_BATCH,
            image_size=TRAIN_IMAGE_SIZE,
            optimizer="sgd",
            device="cpu",
            val_split=0.0,
        ).task_id
        for _ in range(level)
    ]
    for task_id in tasks:
        client.wait_for(task_id, in_batch_loop)
    started = time.time()
    time.sleep(settings.window_s)
    ended = time.time()
    for task_id in tasks:
        client.cancel(task_id)
    rates = []
    threads: list[float] = []
    for task_id in tasks:
        events = client.events(task_id)  # until it has stopped
        rates.append(progress_images_per_s(events, started, ended, TRAIN_BATCH))
        threads.extend(
            event.metrics["threads"]
            for event in events
            if event.type == task_pb2.EVENT_TYPE_METRICS
            and "batch" in event.metrics
            and "threads" in event.metrics
        )
    prefix = f"scale_train_{level}"
    return {
        f"{prefix}_images_per_s": sum(rates),
        f"{prefix}_per_task_images_per_s": statistics.mean(rates),
        f"{prefix}_threads": statistics.mean(threads) if threads else 0.0,
    }


def _predict(
    client: TandemClient, models: list[Path], png: bytes, settings: Settings
) -> dict[str, float]:
    calls = [predict_call(client, model, png) for model in models]
    for call in calls:  # loads each model (the first Predict of a model loads it)
        for _ in range(settings.warmup):
            call()
    answered = [0] * (len(calls) * CONCURRENCY)
    deadline = time.perf_counter() + settings.window_s

    def caller(index: int) -> None:
        call = calls[index // CONCURRENCY]
        while True:
            call()
            if time.perf_counter() > deadline:
                return
            answered[index] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(answered))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {f"scale_predict_{len(models)}_per_s": sum(answered) / settings.window_s}


class _Memory:
    """The server's resident set and its workers' summed PSS, highest per level."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss: dict[int, float] = {}
        self.workers: dict[int, float] = {}

    def sample(self, level: int) -> None:
        self.rss[level] = max(self.rss.get(level, 0.0), _status_mb(self.pid, "VmRSS"))
        workers = sum(_pss_mb(child) for child in _descendants(self.pid))
        self.workers[level] = max(self.workers.get(level, 0.0), workers)

    def figures(self) -> dict[str, float]:
        figures = {f"scale_rss_{level}_mb": mb for level, mb in self.rss.items()}
        figures.update({f"scale_workers_pss_{level}_mb": mb for level, mb in self.workers.items()})
        return figures


def _status_mb(pid: int, field: str) -> float:
    """A `kB` field of /proc/PID/status in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _pss_mb(pid: int) -> float:
    """Proportional set size of process `pid` in MB; 0 if it has gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # The name (field 2) is in parentheses and may hold spaces: fields after the last ")".
        parent = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    pending = [pid]
    while pending:
        children = parents.get(pending.pop(), [])
        found.extend(children)
        pending.extend(children)
    return found
