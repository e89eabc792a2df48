"""Preemption over REST, the way the seed's clients see it: its first scenario, where a
batch inference at priority 2 preempts a training at priority 7 that holds the GPU
memory it needs, and the `preemptible` field. (The same flow over gRPC, and a training
that opted out: tests/server/test_preemption_flow.py.)"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engines.datasets import SYNTHETIC_CLASSES
from engines.devices import SIMULATED_CUDA_ENV
from scheduler.inventory import GpuInfo, StaticInventory
from tests.gateway.conftest import Rest, follow_logs, sse_messages
from tests.harness.models import write_model

# As in tests/server/test_preemption_flow.py: it runs until well after it is preempted.
LONG = {"epochs": 8, "batch_size": 8, "val_split": 0.25}
SMALL = {"model": "mobilenet_v3_small", "dataset": "synthetic", "image_size": 32, "device": "cpu"}


def _wait_in_batch_loop(rest: Rest, task_id: str) -> None:
    path = f"/api/v2/tasks/{task_id}/logs"
    with rest.get(path, stream=True) as response:
        for message in sse_messages(response):
            if "batch" in (message.data.get("metrics") or {}):
                return
    raise AssertionError(f"task {task_id} ended before its batch loop")


def _when(stamp: str) -> datetime:
    """An RFC 3339 time as protobuf writes it (0, 3, 6 or 9 fraction digits), to the µs."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z", stamp)
    assert match is not None, stamp
    fraction = (match.group(2) or "")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{match.group(1)}.{fraction}+00:00")


def _states(messages: list[Any]) -> list[str]:
    return [m.data["state"] for m in messages if m.data.get("state")]


def test_preemptible_false_is_kept_and_shown(fresh_rest: Callable[..., Rest]) -> None:
    rest = fresh_rest()
    hold = {"max_concurrent": {"cpu": {"training": 0}}}
    assert rest.post("/api/v2/resources/config", json=hold).ok
    task = rest.post("/api/v2/train", json={**SMALL, "preemptible": False}).json()
    assert task["preemptible"] is False and task["training"]["preemptible"] is False
    assert task["preemptions"] == 0
    wrong = rest.post("/api/v2/train", json={**SMALL, "preemptible": "maybe"})
    assert wrong.status_code == 422
    rest.post(f"/api/v2/tasks/{task['task_id']}/cancel")


def test_seed_scenario_1_the_inference_at_2_preempts_the_training_at_7_on_a_gpu(
    fresh_rest: Callable[..., Rest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's first scenario with its own configs: a training at priority 7 holds the
    GPU memory a batch inference at priority 2 needs. The GPU is made up at the NVML
    boundary (1.25 GB, so the two estimates do not fit together) and its jobs compute on
    the CPU (`engines.devices.SIMULATED_CUDA_ENV`, read by the workers only). The
    inference is admitted first by preempting the training, which then finishes."""
    monkeypatch.setenv(SIMULATED_CUDA_ENV, "1")  # inherited by the spawned workers
    size = 1280 * 2**20
    gpu = StaticInventory([GpuInfo(0, "Made-up GPU", size, 0, size)])
    rest = fresh_rest(gpu, preempt_min_runtime_s=0.0)
    model = write_model(
        Path(rest.server.config.data_dir) / "models" / "colours.pt",
        "mobilenet_v3_small",
        SYNTHETIC_CLASSES,
        32,
    )  # type: ignore[union-attr]

    train_config = {
        "model": "mobilenet_v3_small",
        "batch_size": 16,
        "device": "cuda",
        "priority": 7,
    }
    train = rest.post("/api/v2/train", json={**train_config, **SMALL, **LONG, "device": "cuda"})
    assert train.status_code == 200, train.text
    training = train.json()
    _wait_in_batch_loop(rest, training["task_id"])
    infer_config = {"device": "cuda", "priority": 2}
    infer = rest.post(
        "/api/v2/inference", json={**infer_config, "model_path": str(model), "dataset": "synthetic"}
    )
    assert infer.status_code == 200, infer.text
    inference = infer.json()

    inference_log = follow_logs(rest, inference["task_id"], version="v2")
    training_log = follow_logs(rest, training["task_id"], version="v2")
    assert _states(inference_log) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert _states(training_log) == [
        "QUEUED",
        "RUNNING",
        "PREEMPTED",
        "QUEUED",
        "RUNNING",
        "SUCCEEDED",
    ]
    preempted = next(m for m in training_log if m.data.get("state") == "PREEMPTED")
    assert preempted.data["message"].startswith(f"preempted by task {inference['task_id']} ")
    inference_running = next(m for m in inference_log if m.data.get("state") == "RUNNING")
    resumed = [m for m in training_log if m.data.get("state") == "RUNNING"][1]
    # The order the seed promises: the inference ran in the room the training left, and
    # the training came back once the inference had given it back.
    assert _when(preempted.data["time"]) <= _when(inference_running.data["time"])
    assert _when(inference_log[-1].data["time"]) <= _when(resumed.data["time"])
    assert inference_running.data["message"] == "running on cuda:0"
    assert rest.get(f"/api/v2/tasks/{training['task_id']}").json()["preemptions"] == 1
    assert rest.get("/api/v2/resources").json()["preemptions_total"] == 1
