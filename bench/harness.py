"""What the benchmarks that run a real Tandem share: the server, its inputs, the arithmetic.

- `Tandem`: `create_server` on port 0 in a daemon thread of this process (through
  `tests.harness.threaded.ServerThread`, as the tests do), with sync gRPC stubs and the few
  calls the benchmarks make (submit, follow a task's events, cancel, change limits).
  `executor` picks what runs the admitted jobs, so a benchmark that takes an executor
  measures the local worker pools today and any other executor the config offers
  (issue 9's Ray executor) with the same code; figures measured through an executor
  other than `local` get its name after their prefix (`figure`).
- Inputs made on the spot, seeded: a photo-like PNG, an ImageFolder of such PNGs, a
  random-init model artifact. Nothing is downloaded.
- `percentile`, `concurrent_calls`, `torch_threads`, `DEFAULT_THREADS`: the arithmetic
  and the thread settings that every comparison needs done the same way on both sides.
- `TandemClient`: the same calls on a channel to any Tandem (a `tandem serve` process).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from PIL import Image

from engines import zoo
from engines.artifacts import save_artifact
from engines.datasets import IMAGENET_MEAN, IMAGENET_STD
from server.config import ServerConfig, load
from tandem.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    resource_service_pb2,
    resource_service_pb2_grpc,
    resources_pb2,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)
from tests.harness.threaded import ServerThread

__all__ = [
    "DEFAULT_THREADS",
    "LOCAL",
    "SEED",
    "Tandem",
    "TandemClient",
    "concurrent_calls",
    "event_time",
    "figure",
    "in_batch_loop",
    "latency",
    "make_png",
    "percentile",
    "progress_images_per_s",
    "save_model",
    "torch_threads",
    "write_image_folder",
]

LOCAL = "local"
SEED = 20261128
# Generous: on a loaded 2-core machine a worker's first import of torch alone can take 15 s.
CALL_TIMEOUT_S = 600.0
# torch's own intra-op thread count in a fresh process (every core, unless OMP_NUM_THREADS
# says otherwise), read before anything here sets it: what a bare loop gets by default.
DEFAULT_THREADS = torch.get_num_threads()
# The job ids the server's thread share gives served models.
SERVED_PREFIX = "serve-"


def figure(name: str, executor: str) -> str:
    """`name` for the local executor; with another, its name after the prefix:
    `dispatch_warm_ms` through `ray` is `dispatch_ray_warm_ms`."""
    if executor == LOCAL:
        return name
    prefix, _, rest = name.partition("_")
    return f"{prefix}_{executor}_{rest}"


def server_config(data_dir: Path, *, executor: str = LOCAL, **overrides: Any) -> ServerConfig:
    """The config of a benchmark's server: port 0, defaults otherwise, `TANDEM_*` ignored
    (a benchmark measures the defaults, not whatever the shell happens to set)."""
    config = load(grpc_port=0, data_dir=str(data_dir), env={})
    # A cancelled training job stops at its next batch; 5 s is plenty and bounds a hang.
    config = replace(config, cancel_grace_s=5.0, **overrides)
    if executor != LOCAL:
        # Through a dict: `executor` is a config field only where an executor other than
        # the local one exists, and `replace` refuses unknown fields with a TypeError.
        options: dict[str, Any] = {"executor": executor}
        config = replace(config, **options)
    return config


class TandemClient:
    """Sync stubs on one channel to a running Tandem, and the few calls the benchmarks
    make (submit, follow a task's events, cancel, change limits)."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.training = training_service_pb2_grpc.TrainingServiceStub(self.channel)
        self.inference = inference_service_pb2_grpc.InferenceServiceStub(self.channel)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)
        self.resources = resource_service_pb2_grpc.ResourceServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def train(self, **fields: Any) -> task_pb2.Task:
        request = training_service_pb2.TrainRequest(**fields)
        task: task_pb2.Task = self.training.Train(request, timeout=CALL_TIMEOUT_S).task
        return task

    def infer(self, **fields: Any) -> task_pb2.Task:
        request = inference_service_pb2.InferRequest(**fields)
        task: task_pb2.Task = self.inference.Infer(request, timeout=CALL_TIMEOUT_S).task
        return task

    def get(self, task_id: str) -> task_pb2.Task:
        request = task_service_pb2.GetTaskRequest(task_id=task_id)
        task: task_pb2.Task = self.tasks.GetTask(request, timeout=CALL_TIMEOUT_S).task
        return task

    def cancel(self, task_id: str) -> None:
        self.tasks.CancelTask(
            task_service_pb2.CancelTaskRequest(task_id=task_id), timeout=CALL_TIMEOUT_S
        )

    def events(self, task_id: str) -> list[task_pb2.TaskEvent]:
        """Every event of the task; blocks until the task has ended."""
        request = task_service_pb2.LogsRequest(task_id=task_id, follow=True)
        return [response.event for response in self.tasks.Logs(request, timeout=CALL_TIMEOUT_S)]

    def wait_for(
        self, task_id: str, predicate: Callable[[task_pb2.TaskEvent], bool]
    ) -> task_pb2.TaskEvent:
        """Follows the task's log until an event satisfies `predicate`; returns it."""
        request = task_service_pb2.LogsRequest(task_id=task_id, follow=True)
        stream = self.tasks.Logs(request, timeout=CALL_TIMEOUT_S)
        try:
            for response in stream:
                event: task_pb2.TaskEvent = response.event
                if predicate(event):
                    return event
        finally:
            stream.cancel()
        raise RuntimeError(f"task {task_id} ended before the awaited event")

    def succeeded(self, task_id: str) -> task_pb2.Task:
        """Waits for the task to end; returns it, or raises if it did not succeed."""
        self.events(task_id)
        task = self.get(task_id)
        if task.state != task_pb2.TASK_STATE_SUCCEEDED:
            state = task_pb2.TaskState.Name(task.state)
            raise RuntimeError(f"benchmark task {task_id} ended {state}: {task.error}")
        return task

    def set_limits(self, device: str, *, training: int, inference: int) -> None:
        limits = resources_pb2.ConcurrencyLimits(training=training, inference=inference)
        request = resource_service_pb2.UpdateLimitsRequest(max_concurrent={device: limits})
        self.resources.UpdateLimits(request, timeout=CALL_TIMEOUT_S)


class Tandem(TandemClient):
    """A running Tandem server in this process and sync stubs on one channel to it."""

    def __init__(self, data_dir: Path, *, executor: str = LOCAL, **overrides: Any) -> None:
        self.executor = executor
        self.server = ServerThread(server_config(data_dir, executor=executor, **overrides))
        self.server.start()
        super().__init__(f"127.0.0.1:{self.server.port}")

    def __enter__(self) -> Tandem:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        super().close()
        self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    def thread_shares(self) -> dict[str, int]:
        """Job or task id -> the intra-op threads the server gives it now, for every
        running job (served models are `serve-...`)."""
        service = self.server.service
        assert service is not None
        return self.server.call(service.threads.snapshot)

    def served_threads(self) -> int:
        """The threads of the one model this server serves now."""
        served = [n for job, n in self.thread_shares().items() if job.startswith(SERVED_PREFIX)]
        if len(served) != 1:
            raise RuntimeError(f"expected one served model, the server has {len(served)}")
        return served[0]

    def wait_workers_ready(
        self, device: str, count: int, timeout_s: float = CALL_TIMEOUT_S
    ) -> None:
        """Returns once `count` idle workers of the local pool on `device` have imported
        torch and said so. Other executors keep their own pools: nothing to wait for."""
        service = self.server.service
        assert service is not None
        executor = service.executor
        # The local pool's readiness is not part of any API (a worker still starting just
        # takes its first job a little later), so the benchmark reads the pool itself.
        idle = getattr(executor, "_idle", None)
        if not isinstance(idle, dict):
            return

        def ready() -> int:
            return sum(1 for worker in idle.get(device, []) if worker.ready)

        deadline = time.monotonic() + timeout_s
        while self.server.call(ready) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} {device} workers not ready after {timeout_s:g} s")
            time.sleep(0.05)


def event_time(event: task_pb2.TaskEvent) -> float:
    """The event's timestamp (the server's `time.time()` when it logged it), in seconds."""
    return event.time.seconds + event.time.nanos * 1e-9


def progress_images_per_s(
    events: list[task_pb2.TaskEvent], started: float, ended: float, batch_size: int
) -> float:
    """A training task's images/s between `started` and `ended` (`time.time()`, as the
    server's event timestamps): batches done between its first and last progress event
    in that span (events come every 0.5 s at most, at batch ends), or, with fewer than
    two events there, the running rate of the epoch at its last progress event."""
    progress = [
        event
        for event in events
        if event.type == task_pb2.EVENT_TYPE_METRICS and "batch" in event.metrics
    ]
    if not progress:
        raise RuntimeError("the training task reported no progress")
    inside = [event for event in progress if started <= event_time(event) <= ended]
    if len(inside) < 2 or inside[0].metrics["epoch"] != inside[-1].metrics["epoch"]:
        return progress[-1].metrics["images_per_sec"]
    first, last = inside[0], inside[-1]
    batches = last.metrics["batch"] - first.metrics["batch"]
    return batches * batch_size / (event_time(last) - event_time(first))


def in_batch_loop(event: task_pb2.TaskEvent) -> bool:
    """Whether `event` is a training task's first progress event (its batch loop runs);
    raises if the task ended before it got there (for `TandemClient.wait_for`)."""
    if event.type == task_pb2.EVENT_TYPE_STATE and event.state not in (
        task_pb2.TASK_STATE_QUEUED,
        task_pb2.TASK_STATE_RUNNING,
    ):
        raise RuntimeError(f"the training task ended before its batch loop: {event.message}")
    return event.type == task_pb2.EVENT_TYPE_METRICS and "batch" in event.metrics


def make_png(size: int, seed: int = SEED) -> bytes:
    """A size x size RGB PNG: smooth colour blobs plus pixel noise, like a photo's texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    smooth = np.asarray(
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16
    )
    noise = rng.integers(-12, 13, size=smooth.shape, dtype=np.int16)
    pixels = np.clip(smooth + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def class_names(count: int) -> list[str]:
    """`class_0000`, `class_0001`...: the labels of every benchmark model and folder."""
    return [f"class_{i:04d}" for i in range(count)]


def write_image_folder(root: Path, *, classes: int, per_class: int, size: int) -> Path:
    """An ImageFolder at `root`: `classes` sub-folders of `per_class` distinct PNGs each."""
    for label, name in enumerate(class_names(classes)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            (folder / f"{index:05d}.png").write_bytes(make_png(size, SEED + 7919 * label + index))
    return root


def save_model(path: Path, architecture: str, num_classes: int, image_size: int) -> Path:
    """A random-init (seeded) `architecture` saved as a Tandem model artifact."""
    torch.manual_seed(SEED)
    save_artifact(
        str(path),
        model=zoo.build_model(architecture, num_classes, image_size),
        architecture=architecture,
        classes=class_names(num_classes),
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        epoch=0,
        metrics={},
    )
    return path


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """`torch.set_num_threads(count)` for the block (it is process-wide)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def latency(call: Callable[[], Any]) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def concurrent_calls(call: Callable[[], Any], count: int, workers: int) -> float:
    """Total time for `count` calls made by `workers` threads, each taking the next."""
    remaining = iter(range(count))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if next(remaining, None) is None:
                    return
            call()

    with ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        futures = [pool.submit(worker) for _ in range(workers)]
        for future in futures:
            future.result()
        return time.perf_counter() - started
