"""`python -m bench.gpu_check` (`make gpu-check`): the seed's GPU claims, checked in one go
on a machine with an NVIDIA GPU, in under 8 minutes (issue 19).

A GPU is lent only now and then, for minutes, so this is one prepared command. Each check
is a small function that measures and returns figures; they run in sequence, each with
its own time budget (`Check.budget_s`, handed to it as a deadline that its loops obey).
A check that fails or overruns is recorded (its figures NaN, its reason under `failures`
in the JSON) and the others still run. The checks, on `cuda:0`:

- `gpu_tests`: `pytest -m gpu`, passed and failed counts.
- `scenario_1`: the seed's first scenario: a training (mobilenet_v3_small, batch 16,
  priority 7) beside three inference tasks and a Predict load (priority 2); Predict p99
  with all that beside it over idle (goal <= 1.5), and the GPU's utilisation sampled by
  NVML during the overlap (the seed claims 90-95 %).
- `scenario_2`: ten batch inferences with the inference limit 3: the most running at once
  (GetResources, sampled; goal <= 3) and the out-of-memory failures (goal 0).
- `admission`: per task, its estimate (read from the server's planner just before the
  submit), its measured peak (`peak_memory_bytes`, torch's `max_memory_allocated`) and
  NVML's peak used memory, sampled; an admission overcommitted when a peak exceeded its
  estimate or the admitted estimates exceeded the GPU's memory.
- `oom`: a task made to run out of memory on purpose (resnet50, batch 256, 1024 px,
  its estimate seeded low so that it is admitted): FAILED with the reason, its estimate
  raised, the same submit admitted again with the raised estimate.
- `throughput`: training images/s and Predict at concurrency 8 through Tandem against
  bare loops on the same GPU, fp32 and the fastest mixed precision (bf16 where the GPU
  has it, else fp16).
- `preemption`: a preemptible training holds most of the GPU's memory (estimates seeded),
  an urgent one that cannot fit beside it preempts it: the urgent task's wait.
- `layouts`: the Predict model's forward pass as built, with batch norm folded, and
  folded in channels-last, at batch 32 under IEEE float32 (`bench/network_layouts.py`):
  whether a served network should go channels-last on a GPU too.

Without a GPU (NVML finds none, or torch sees no CUDA) it prints one line and exits 0.
Figures go to `bench/results/gpu.json`: `{"figures": {...}, "failures": {...}}`, a
failed figure as null (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"
DEVICE = "cuda:0"
TOTAL_BUDGET_S = 8 * 60
POLL_S = 0.1
GIB = 1024**3


@dataclass(frozen=True)
class Budget:
    """A check's deadline (`time.monotonic()`)."""

    deadline: float

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def over(self) -> bool:
        return time.monotonic() >= self.deadline


@dataclass(frozen=True)
class Inputs:
    """What the checks share, made once: the data dir (a model root of every server), the
    ImageFolders and the model artifacts."""

    root: Path
    train_folder: Path
    infer_folder: Path
    oom_folder: Path
    infer_model: Path
    predict_model: Path
    png: bytes


@dataclass(frozen=True)
class Check:
    """One check: its name, its function, its time budget and the figures it returns
    (listed so that a failure can record each as NaN)."""

    name: str
    run: Callable[[Inputs, Budget], dict[str, float]]
    budget_s: float
    figures: tuple[str, ...]


# -- the GPU and NVML -----------------------------------------------------------------


def no_gpu_reason() -> str | None:
    """Why this machine has no usable NVIDIA GPU, or None when it has one."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVMLError, or no pynvml: either way no GPU to check
        return f"NVML: {exc}"
    if count == 0:
        return "NVML: no devices"
    import torch

    if not torch.cuda.is_available():
        return f"NVML sees {count} GPU(s) but torch.cuda.is_available() is false"
    return None


class NvmlSampler:
    """Samples the GPU's utilisation (%) and used memory (bytes) every `POLL_S` in a
    thread, while in its `with` block. The GPU is CUDA's device 0 matched by UUID."""

    def __init__(self) -> None:
        import pynvml
        import torch

        self._nvml = pynvml
        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(0).uuid)
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetUUID(handle)
            if uuid in (name.decode() if isinstance(name, bytes) else name):
                self._handle = handle
        self.utilisation: list[float] = []
        self.used: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def total_bytes(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).total)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self.utilisation.append(
                float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            )
            self.used.append(float(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used))

    def __enter__(self) -> NvmlSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()


# -- helpers on a running Tandem ----------------------------------------------------------


@contextmanager
def tandem_on_gpu(inputs: Inputs, name: str, **overrides: Any) -> Iterator[Any]:
    """A Tandem server in this process with its own data dir under `inputs.root` (which
    holds the models), its workers on the GPU ready."""
    from bench.harness import Tandem

    data_dir = inputs.root / name
    # Datasets and models are shared by every check's server: their root is inputs.root.
    roots = (inputs.root.resolve(),)
    with Tandem(data_dir, dataset_roots=roots, model_roots=roots, **overrides) as tandem:
        yield tandem


def planner(tandem: Any) -> Any:
    """The server's memory planner (not part of any API: the check reads the estimates
    admission uses)."""
    return tandem.server.service.manager._planner


def estimate_of(tandem: Any, shape: Any) -> int:
    from engines.catalogue import parameter_count

    plan = planner(tandem)
    return int(
        tandem.server.call(lambda: plan._estimates.estimate(shape, parameter_count(shape.model)))
    )


def set_estimate(tandem: Any, shape: Any, estimate_bytes: int) -> None:
    """Seeds the planner's estimate of `shape` (lower or higher than it would be)."""
    plan = planner(tandem)

    def seed() -> None:
        plan._estimates._measured[shape] = estimate_bytes

    tandem.server.call(seed)


def train_shape(model: str, batch: int, size: int, precision: str = "fp32") -> Any:
    from scheduler import Kind
    from scheduler.memory import Shape

    return Shape(model, batch, size, Kind.TRAINING, precision)


def infer_shape(model: str, batch: int, size: int) -> Any:
    from scheduler import Kind
    from scheduler.memory import Shape

    return Shape(model, batch, size, Kind.INFERENCE, "fp32")


def cancel(tandem: Any, task_id: str) -> None:
    """Cancels the task; one that has ended already is left as it is."""
    import grpc

    with suppress(grpc.RpcError):
        tandem.cancel(task_id)


def wait_state(tandem: Any, task_id: str, states: set[Any], budget: Budget) -> Any:
    """Polls the task until its state is one of `states`; returns it."""
    while True:
        task = tandem.get(task_id)
        if task.state in states:
            return task
        if budget.over():
            raise TimeoutError(f"task {task_id} still {task.state} at the end of the budget")
        time.sleep(POLL_S)


def ended(tandem: Any, task_id: str, budget: Budget) -> Any:
    from tandem.v1 import task_pb2

    done = {
        task_pb2.TASK_STATE_SUCCEEDED,
        task_pb2.TASK_STATE_FAILED,
        task_pb2.TASK_STATE_CANCELLED,
    }
    return wait_state(tandem, task_id, done, budget)


def running_on_gpu(tandem: Any) -> int:
    """Inference tasks running on the GPU now (GetResources)."""
    from tandem.v1 import resource_service_pb2

    answer = tandem.resources.GetResources(resource_service_pb2.GetResourcesRequest(), timeout=30)
    usage = answer.device_usage.get(DEVICE)
    return 0 if usage is None else int(usage.inference)


def gpu_predict(tandem: Any, model_path: Path, png: bytes, priority: int = 0) -> Callable[[], None]:
    from tandem.v1 import inference_service_pb2

    request = inference_service_pb2.PredictRequest(
        model_path=str(model_path), image=png, top_k=5, device=DEVICE, priority=priority
    )

    def call() -> None:
        tandem.inference.Predict(request, timeout=120)

    return call


def infer(tandem: Any, inputs: Inputs, batch: int = 64, priority: int = 0) -> str:
    task = tandem.infer(
        model_path=str(inputs.infer_model),
        dataset=str(inputs.infer_folder),
        batch_size=batch,
        device=DEVICE,
        priority=priority,
    )
    return str(task.task_id)


def train(tandem: Any, inputs: Inputs, **fields: Any) -> str:
    request: dict[str, Any] = {
        "model": "mobilenet_v3_small",
        "dataset": str(inputs.train_folder),
        "epochs": 100,
        "batch_size": 16,
        "image_size": 224,
        "optimizer": "sgd",
        "device": DEVICE,
        "val_split": 0.0,
        "precision": "fp32",
    }
    request.update(fields)
    return str(tandem.train(**request).task_id)


# -- the checks -------------------------------------------------------------------------


def check_gpu_tests(inputs: Inputs, budget: Budget) -> dict[str, float]:
    """`pytest -m gpu`: how many passed and failed."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=budget.left(),
        check=False,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    def count(word: str) -> float:
        found = re.search(rf"(\d+) {word}", summary)
        return float(found.group(1)) if found else 0.0

    failed = count("failed") + count("error")
    if done.returncode not in (0, 1, 5):  # 5: no test collected
        raise RuntimeError(f"pytest exited {done.returncode}: {summary or done.stderr[-300:]}")
    return {"gpu_tests_passed": count("passed"), "gpu_tests_failed": failed}


def check_scenario_1(inputs: Inputs, budget: Budget) -> dict[str, float]:
    """Predict p99 beside a training and three inferences, over idle; NVML utilisation."""
    from bench.harness import latency, percentile
    from tandem.v1 import task_pb2

    calls = 100
    with tandem_on_gpu(inputs, "scenario-1") as tandem:
        predict = gpu_predict(tandem, inputs.predict_model, inputs.png, priority=2)
        for _ in range(10):  # loads the model, warms cuDNN
            predict()
        idle = [latency(predict) for _ in range(calls)]
        training = train(tandem, inputs, priority=7)
        inferences = [infer(tandem, inputs) for _ in range(3)]
        wait_state(tandem, training, {task_pb2.TASK_STATE_RUNNING}, budget)
        with NvmlSampler() as nvml:
            busy = [latency(predict) for _ in range(calls)]
        for task_id in [training, *inferences]:
            cancel(tandem, task_id)
    return {
        "scenario1_predict_idle_p99_ms": percentile(idle, 99) * 1000,
        "scenario1_predict_busy_p99_ms": percentile(busy, 99) * 1000,
        "scenario1_p99_ratio": percentile(busy, 99) / percentile(idle, 99),
        "scenario1_gpu_util_mean_pct": statistics.mean(nvml.utilisation),
        "scenario1_gpu_util_p50_pct": percentile(nvml.utilisation, 50),
    }


def check_scenario_2(inputs: Inputs, budget: Budget) -> dict[str, float]:
    """Ten batch inferences at inference limit 3: the most at once, OOM failures."""
    from tandem.v1 import task_pb2

    with tandem_on_gpu(inputs, "scenario-2") as tandem:
        tandem.set_limits(DEVICE, training=1, inference=3)
        tasks = [infer(tandem, inputs) for _ in range(10)]
        most = 0
        while not budget.over():
            most = max(most, running_on_gpu(tandem))
            states = [tandem.get(task_id).state for task_id in tasks]
            if all(
                s not in (task_pb2.TASK_STATE_QUEUED, task_pb2.TASK_STATE_RUNNING) for s in states
            ):
                break
            time.sleep(POLL_S)
        finals = [ended(tandem, task_id, budget) for task_id in tasks]
    return {
        "scenario2_max_running": float(most),
        "scenario2_oom_failures": float(sum("out of memory" in t.error for t in finals)),
        "scenario2_succeeded": float(sum(t.state == task_pb2.TASK_STATE_SUCCEEDED for t in finals)),
    }


def check_admission(inputs: Inputs, budget: Budget) -> dict[str, float]:
    """Estimates against measured peaks (torch and NVML) for a training and inferences
    that run together."""
    from scheduler.memory import gb

    with tandem_on_gpu(inputs, "admission") as tandem, NvmlSampler() as nvml:
        total = nvml.total_bytes()
        baseline = min(nvml.used) if nvml.used else 0.0
        shapes = {
            "train": train_shape("mobilenet_v3_small", 16, 224),
            "infer": infer_shape("resnet18", 64, 224),
        }
        estimates = {kind: estimate_of(tandem, shape) for kind, shape in shapes.items()}
        tasks = {
            train(tandem, inputs, epochs=1): "train",
            infer(tandem, inputs): "infer",
            infer(tandem, inputs, priority=1): "infer",
        }
        peaks = {}
        for task_id in tasks:
            task = ended(tandem, task_id, budget)
            peaks[task_id] = float(task.metrics.get("peak_memory_bytes", math.nan))
    over = [t for t, kind in tasks.items() if peaks[t] > estimates[tasks[t]]]
    nvml_peak = max(nvml.used) - baseline
    admitted = sum(estimates[kind] for kind in tasks.values())
    for task_id, kind in tasks.items():
        print(
            f"  {kind} {task_id}: estimate {gb(estimates[kind])}, "
            f"peak {gb(peaks[task_id])} (torch)",
            flush=True,
        )
    return {
        "admission_train_estimate_gb": estimates["train"] / GIB,
        "admission_infer_estimate_gb": estimates["infer"] / GIB,
        "admission_max_peak_over_estimate": max(
            peaks[t] / estimates[kind] for t, kind in tasks.items()
        ),
        "admission_nvml_peak_gb": nvml_peak / GIB,
        "admission_nvml_over_estimates": nvml_peak / admitted,
        "admission_overcommitted": float(bool(over) or admitted > total),
    }


OOM_SHAPE = ("resnet50", 256, 1024)


def check_oom(inputs: Inputs, budget: Budget) -> dict[str, float]:
    """A huge batch admitted on a low estimate: FAILED out of memory, the estimate
    raised, the same submit admitted again."""
    from tandem.v1 import task_pb2

    model, batch, size = OOM_SHAPE
    shape = train_shape(model, batch, size)
    fields = {"model": model, "batch_size": batch, "image_size": size, "epochs": 1}
    with tandem_on_gpu(inputs, "oom") as tandem:
        set_estimate(tandem, shape, GIB)  # far too low: admitted at once
        first = ended(
            tandem, train(tandem, inputs, dataset=str(inputs.oom_folder), **fields), budget
        )
        raised = estimate_of(tandem, shape)
        second = train(tandem, inputs, dataset=str(inputs.oom_folder), **fields)
        again = wait_state(
            tandem,
            second,
            {
                task_pb2.TASK_STATE_RUNNING,
                task_pb2.TASK_STATE_FAILED,
                task_pb2.TASK_STATE_SUCCEEDED,
            },
            budget,
        )
        cancel(tandem, second)
        ended(tandem, second, budget)
    print(
        f"  out-of-memory task: {task_pb2.TaskState.Name(first.state)}: {first.error}", flush=True
    )
    return {
        "oom_failed": float(
            first.state == task_pb2.TASK_STATE_FAILED and "out of memory" in first.error
        ),
        "oom_estimate_raised_ratio": raised / GIB,
        "oom_resubmit_admitted": float(again.start_time.seconds > 0),
    }


def fastest_mixed_precision() -> str:
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def bare_training_rate(precision: str, seconds: float) -> float:
    """images/s of a plain training loop of mobilenet_v3_small, batch 16 at 224 px, on
    the GPU, inputs already on it (the upper bound Tandem's loop is held to)."""
    import torch
    import torchvision

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    model = torchvision.models.get_model("mobilenet_v3_small", num_classes=4).cuda().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    inputs = torch.randn(16, 3, 224, 224, device="cuda")
    labels = torch.randint(0, 4, (16,), device="cuda")
    images = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        scaled: Any = scaler.scale(loss)  # Tensor.backward carries no annotations
        scaled.backward()
        scaler.step(optimizer)
        scaler.update()
        images += 16
    torch.cuda.synchronize()
    rate = images / (time.monotonic() - started)
    del model, optimizer
    torch.cuda.empty_cache()
    return rate


def bare_predict_c8(model_path: Path, png: bytes, calls: int) -> float:
    """Seconds for `calls` predictions of `png` by 8 threads, in-process on the GPU."""
    import io

    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    from bench.harness import concurrent_calls
    from engines.artifacts import load_artifact

    artifact = load_artifact(str(model_path))
    model = torchvision.models.get_model(
        artifact.architecture, weights=None, num_classes=artifact.num_classes
    )
    model.load_state_dict(artifact.state_dict)
    model = model.cuda().eval()
    transform = transforms.Compose(
        [
            transforms.Resize(artifact.image_size),
            transforms.CenterCrop(artifact.image_size),
            transforms.ToTensor(),
            transforms.Normalize(artifact.mean, artifact.std),
        ]
    )

    def call() -> None:
        with Image.open(io.BytesIO(png)) as image:
            batch = transform(image.convert("RGB")).unsqueeze(0).cuda()
        with torch.inference_mode():
            torch.softmax(model(batch), dim=1).topk(5).indices.tolist()

    for _ in range(10):
        call()
    return concurrent_calls(call, calls, 8)


def check_throughput(inputs: Inputs, budget: Budget) -> dict[str, float]:
    """Training images/s (fp32 and mixed) and Predict c8 through Tandem over bare loops."""
    import torch

    from bench.harness import concurrent_calls, progress_images_per_s
    from tandem.v1 import task_pb2

    mixed = fastest_mixed_precision()
    figures: dict[str, float] = {}
    with tandem_on_gpu(inputs, "throughput") as tandem:
        predict = gpu_predict(tandem, inputs.predict_model, inputs.png)
        for _ in range(10):
            predict()
        calls = 200
        tandem_s = concurrent_calls(predict, calls, 8)
        bare_s = bare_predict_c8(inputs.predict_model, inputs.png, calls)
        torch.cuda.empty_cache()  # the bare model's memory back before the trainings
        figures["throughput_predict_c8_per_s"] = calls / tandem_s
        figures["throughput_predict_c8_ratio"] = bare_s / tandem_s
        for label, precision in (("fp32", "fp32"), ("mixed", mixed)):
            task_id = train(tandem, inputs, precision=precision)
            wait_state(tandem, task_id, {task_pb2.TASK_STATE_RUNNING}, budget)
            time.sleep(5)  # past cuDNN's autotuning and the first batches
            started = time.time()
            time.sleep(15)
            finished = time.time()
            cancel(tandem, task_id)
            events = tandem.events(task_id)
            rate = progress_images_per_s(events, started, finished, 16)
            bare = bare_training_rate(precision, 15)
            figures[f"throughput_train_{label}_images_per_s"] = rate
            figures[f"throughput_train_{label}_ratio"] = rate / bare
    figures["throughput_mixed_is_bf16"] = float(mixed == "bf16")
    return figures


def check_preemption(inputs: Inputs, budget: Budget) -> dict[str, float]:
    """A preemptible training holds 60 % of the GPU's memory (seeded estimate); an urgent
    one that needs 60 % too preempts it: its wait from submit to start."""
    from tandem.v1 import task_pb2

    victim_shape = train_shape("mobilenet_v3_small", 16, 224)
    urgent_shape = train_shape("mobilenet_v3_small", 32, 224)
    with tandem_on_gpu(inputs, "preemption", preempt_min_runtime_s=0.0) as tandem:
        tandem.set_limits(DEVICE, training=2, inference=3)
        capacity = planner(tandem)._gate.capacity(DEVICE)
        if not math.isfinite(capacity):
            raise RuntimeError(f"the server has no memory reading for {DEVICE}")
        set_estimate(tandem, victim_shape, int(capacity * 0.6))
        set_estimate(tandem, urgent_shape, int(capacity * 0.6))
        victim = train(tandem, inputs, priority=1, preemptible=True)
        wait_state(tandem, victim, {task_pb2.TASK_STATE_RUNNING}, budget)
        submitted = time.monotonic()
        urgent = train(tandem, inputs, priority=9, batch_size=32, epochs=1)
        wait_state(tandem, urgent, {task_pb2.TASK_STATE_RUNNING}, budget)
        wait_s = time.monotonic() - submitted
        preempted = tandem.get(victim).preemptions
        for task_id in (urgent, victim):
            cancel(tandem, task_id)
    return {"preemption_urgent_wait_s": wait_s, "preemption_victim_preemptions": float(preempted)}


def check_layouts(inputs: Inputs, budget: Budget) -> dict[str, float]:
    import torch

    from bench.network_layouts import measure_layouts

    seconds = min(12.0, budget.left() / 2)
    return measure_layouts(str(inputs.predict_model), torch.device("cuda", 0), 32, seconds)


CHECKS: tuple[Check, ...] = (
    Check("gpu_tests", check_gpu_tests, 90, ("gpu_tests_passed", "gpu_tests_failed")),
    Check(
        "scenario_1",
        check_scenario_1,
        75,
        (
            "scenario1_predict_idle_p99_ms",
            "scenario1_predict_busy_p99_ms",
            "scenario1_p99_ratio",
            "scenario1_gpu_util_mean_pct",
            "scenario1_gpu_util_p50_pct",
        ),
    ),
    Check(
        "scenario_2",
        check_scenario_2,
        60,
        ("scenario2_max_running", "scenario2_oom_failures", "scenario2_succeeded"),
    ),
    Check(
        "admission",
        check_admission,
        45,
        (
            "admission_train_estimate_gb",
            "admission_infer_estimate_gb",
            "admission_max_peak_over_estimate",
            "admission_nvml_peak_gb",
            "admission_nvml_over_estimates",
            "admission_overcommitted",
        ),
    ),
    Check(
        "oom", check_oom, 45, ("oom_failed", "oom_estimate_raised_ratio", "oom_resubmit_admitted")
    ),
    Check(
        "throughput",
        check_throughput,
        100,
        (
            "throughput_predict_c8_per_s",
            "throughput_predict_c8_ratio",
            "throughput_train_fp32_images_per_s",
            "throughput_train_fp32_ratio",
            "throughput_train_mixed_images_per_s",
            "throughput_train_mixed_ratio",
            "throughput_mixed_is_bf16",
        ),
    ),
    Check(
        "preemption",
        check_preemption,
        45,
        ("preemption_urgent_wait_s", "preemption_victim_preemptions"),
    ),
    Check(
        "layouts",
        check_layouts,
        20,
        (
            "layout_built_images_per_s",
            "layout_folded_images_per_s",
            "layout_folded_channels_last_images_per_s",
            "layout_channels_last_gain",
            "layout_max_abs_diff",
        ),
    ),
)


def goals() -> tuple[Any, ...]:
    from bench.report import Goal

    return (
        Goal("gpu_tests_failed", maximum=0),
        Goal("scenario1_p99_ratio", maximum=1.5),
        Goal("scenario1_gpu_util_mean_pct", minimum=90),
        Goal("scenario2_max_running", maximum=3),
        Goal("scenario2_oom_failures", maximum=0),
        Goal("admission_overcommitted", maximum=0),
        Goal("oom_failed", minimum=1),
        Goal("oom_resubmit_admitted", minimum=1),
        Goal("preemption_victim_preemptions", minimum=1),
    )


# -- the run ----------------------------------------------------------------------------


def prepare(root: Path) -> Inputs:
    """The ImageFolders and models every check uses, under `root`."""
    from bench.harness import make_png, save_model, write_image_folder

    models = root / "models"
    return Inputs(
        root=root,
        train_folder=write_image_folder(root / "train", classes=4, per_class=100, size=64),
        infer_folder=write_image_folder(root / "infer", classes=4, per_class=64, size=64),
        oom_folder=write_image_folder(root / "oom", classes=2, per_class=128, size=32),
        infer_model=save_model(models / "resnet18-infer.pt", "resnet18", 4, 224),
        predict_model=save_model(models / "resnet18-predict.pt", "resnet18", 1000, 224),
        png=make_png(224),
    )


def run_check(check: Check, inputs: Inputs) -> tuple[dict[str, float], str | None]:
    """Runs one check within its budget: its figures, or NaN for each and the reason."""
    budget = Budget(time.monotonic() + check.budget_s)
    try:
        figures = check.run(inputs, budget)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return {name: math.nan for name in check.figures}, reason
    if budget.over():
        return figures, f"over its budget of {check.budget_s:g} s"
    return figures, None


def write(path: Path, figures: dict[str, float], failures: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = {name: (value if math.isfinite(value) else None) for name, value in figures.items()}
    text = json.dumps({"figures": kept, "failures": failures}, indent=2) + "\n"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def main() -> int:
    reason = no_gpu_reason()
    if reason is not None:
        print(f"gpu-check: no NVIDIA GPU on this machine ({reason}); nothing to check")
        return 0
    import torch

    from bench.report import format_table, summarize

    print(f"gpu-check on {torch.cuda.get_device_name(0)}", flush=True)
    figures: dict[str, float] = {}
    failures: dict[str, str] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tandem-gpu-check-") as tmp:
        inputs = prepare(Path(tmp))
        for check in CHECKS:
            if time.monotonic() - started > TOTAL_BUDGET_S:
                failures[check.name] = "not run: the whole run's budget is spent"
                figures.update({name: math.nan for name in check.figures})
                continue
            print(f"running {check.name}...", flush=True)
            clock = time.monotonic()
            new, failure = run_check(check, inputs)
            figures.update(new)
            if failure is not None:
                failures[check.name] = failure
                print(f"  FAILED: {failure}", flush=True)
            print(f"  {time.monotonic() - clock:.1f} s", flush=True)
    print()
    print(format_table(figures, goals()))
    print()
    print(summarize(figures, goals()))
    if failures:
        print(f"failed checks: {', '.join(failures)}")
    write(RESULTS, figures, failures)
    print(f"figures written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
