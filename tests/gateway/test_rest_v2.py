"""The v2 REST API through real HTTP, with the seed's own snippets: priorities on train and
inference, resources and their run-time limits, the task list, cancel, and predict."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from scheduler.inventory import GpuInfo, StaticInventory
from tests.gateway.conftest import (
    COLOURS,
    TIMEOUT,
    Model,
    Rest,
    follow_logs,
    png,
    sse_messages,
)

SMALL = {"dataset": "synthetic", "epochs": 1, "image_size": 32}


def test_seed_scenario_1_without_a_gpu(rest: Rest, colour_model: Model) -> None:
    # The seed's configs verbatim ("cuda"), plus the fields it elides ("# ..."):
    # the server under test sees no GPU (no_gpus, on any host), so each is refused with a
    # sentence that says so. The scenario itself (the inference preempts the training,
    # in that order) runs on a made-up GPU in tests/gateway/test_rest_preemption.py.
    train_config = {
        "model": "mobilenet_v3_small",
        "batch_size": 16,
        "device": "cuda",
        "priority": 7,
    }
    infer_configs = [
        {"device": "cuda", "priority": 2},
        {"device": "cuda", "priority": 2},
        {"device": "cuda", "priority": 2},
    ]
    refused = rest.post("/api/v2/train", json={**train_config, **SMALL})
    assert refused.status_code == 409 and "no GPU" in refused.json()["detail"]
    model = {"task_id": colour_model.task_id, "dataset": colour_model.dataset}
    for infer_config in infer_configs:
        refused = rest.post("/api/v2/inference", json={**infer_config, **model})
        assert refused.status_code == 409 and "no GPU" in refused.json()["detail"]

    # The same on the CPU (the seed's scenario 3 puts training there).
    train = rest.post("/api/v2/train", json={**train_config, **SMALL, "device": "cpu"}).json()
    assert train["priority"] == 7 and train["batch_size"] == 16
    infer = rest.post("/api/v2/inference", json={**infer_configs[0], **model, "device": "cpu"})
    assert infer.status_code == 200, infer.text
    assert infer.json()["priority"] == 2
    assert infer.json()["inference"]["task_id"] == colour_model.task_id
    for task_id in (train["task_id"], infer.json()["task_id"]):
        assert follow_logs(rest, task_id, version="v2")[-1].data["state"] == "SUCCEEDED"


def test_a_v1_body_on_v2_gets_the_default_priority(rest: Rest) -> None:
    # The seed's migration guide: old code keeps working, new code adds "priority".
    config = {"model": "resnet18", "device": "cpu", **SMALL}
    old = rest.post("/api/v2/train", json=config).json()
    new = rest.post("/api/v2/train", json={**config, "priority": 5}).json()
    assert old["priority"] == new["priority"] == 5
    for task in (old, new):
        rest.post(f"/api/v2/tasks/{task['task_id']}/cancel")


def test_resources_in_the_seed_shape(rest: Rest) -> None:
    response = requests.get(f"{rest.url}/api/v2/resources", timeout=TIMEOUT)
    assert response.status_code == 200
    resources = response.json()
    assert set(resources) >= {"device_usage", "gpu_memory_info", "max_concurrent"}
    cpu = resources["device_usage"]["cpu"]
    assert isinstance(cpu["training"], int) and isinstance(cpu["inference"], int)
    assert resources["gpu_memory_info"] == {}  # no GPU here
    assert resources["max_concurrent"]["cpu"] == {"training": 2, "inference": 4}


@pytest.fixture
def restore_limits(rest: Rest) -> Iterator[None]:
    before = rest.get("/api/v2/resources").json()["max_concurrent"]
    yield
    assert rest.post("/api/v2/resources/config", json={"max_concurrent": before}).ok


@pytest.mark.usefixtures("restore_limits")
def test_resources_config_is_visible_in_resources(rest: Rest) -> None:
    # The seed's snippet as written, on a machine without a GPU: kept for every GPU
    # (none yet) and reported back, as limits for a device group are on a cluster.
    config = {"max_concurrent": {"cuda": {"training": 1, "inference": 5}}}
    kept = requests.post(f"{rest.url}/api/v2/resources/config", json=config, timeout=TIMEOUT)
    assert kept.status_code == 200, kept.text
    assert kept.json()["max_concurrent"]["cuda"] == {"training": 1, "inference": 5}
    resources = requests.get(f"{rest.url}/api/v2/resources", timeout=TIMEOUT).json()
    assert resources["max_concurrent"]["cuda"] == {"training": 1, "inference": 5}
    assert "cuda" not in resources["device_usage"]  # no GPU appeared by being configured

    config = {"max_concurrent": {"cpu": {"training": 1, "inference": 5}}}
    response = requests.post(f"{rest.url}/api/v2/resources/config", json=config, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["max_concurrent"]["cpu"] == {"training": 1, "inference": 5}
    resources = requests.get(f"{rest.url}/api/v2/resources", timeout=TIMEOUT).json()
    assert resources["max_concurrent"]["cpu"] == {"training": 1, "inference": 5}

    # One kind only: the other keeps its limit.
    one = rest.post("/api/v2/resources/config", json={"max_concurrent": {"cpu": {"inference": 3}}})
    assert one.json()["max_concurrent"]["cpu"] == {"training": 1, "inference": 3}


def test_task_list_in_the_seed_shape(rest: Rest, colour_model: Model) -> None:
    response = requests.get(f"{rest.url}/api/v2/tasks", timeout=TIMEOUT)
    assert response.status_code == 200
    tasks = response.json()
    assert set(tasks) >= {"training_tasks", "inference_tasks", "total_training", "total_inference"}
    assert tasks["total_training"] == len(tasks["training_tasks"]) >= 1
    assert tasks["total_inference"] == len(tasks["inference_tasks"])
    assert all(t["kind"] == "training" for t in tasks["training_tasks"])
    assert colour_model.task_id in {t["task_id"] for t in tasks["training_tasks"]}

    done = rest.get("/api/v2/tasks", params={"state": "succeeded"}).json()
    assert {t["state"] for t in done["training_tasks"] + done["inference_tasks"]} == {"SUCCEEDED"}
    both = rest.get("/api/v2/tasks", params=[("state", "SUCCEEDED,failed"), ("state", "queued")])
    assert both.status_code == 200
    assert both.json()["total_training"] >= done["total_training"]
    first = rest.get("/api/v2/tasks", params={"limit": 1}).json()
    assert len(first["training_tasks"]) == 1
    assert first["total_training"] == tasks["total_training"]


def test_cancel_a_running_task_and_its_log_ends_cancelled(rest: Rest) -> None:
    body = {"model": "mobilenet_v3_small", "device": "cpu", **SMALL, "epochs": 500}
    task = rest.post("/api/v2/train", json=body).json()
    path = f"/api/v2/tasks/{task['task_id']}"
    with rest.get(path + "/logs", stream=True) as response:
        events = sse_messages(response)
        seen = [next(events).data]
        while seen[-1]["type"] != "metrics":  # running for sure: a batch has been done
            seen.append(next(events).data)
        cancelled = rest.post(path + "/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] in ("RUNNING", "CANCELLED")
        seen.extend(e.data for e in events)
    assert seen[-1]["type"] == "state" and seen[-1]["state"] == "CANCELLED"
    assert rest.get(path).json()["state"] == "CANCELLED"
    again = rest.post(path + "/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["detail"]


def _predict(rest: Rest, files: dict[str, Any], **form: Any) -> requests.Response:
    return rest.post("/api/v2/predict", files=files, data=form)


def test_predict_an_uploaded_png(rest: Rest, colour_model: Model) -> None:
    image = png(COLOURS["red"])
    answer = _predict(rest, {"file": ("red.png", image, "image/png")}, task_id=colour_model.task_id)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["device"] == "cpu"
    assert len(result["predictions"]) == 3  # top_k 5, capped at three classes
    assert {p["label"] for p in result["predictions"]} == set(COLOURS)
    assert sum(p["score"] for p in result["predictions"]) == pytest.approx(1.0, abs=1e-4)
    assert all(isinstance(p["index"], int) for p in result["predictions"])

    # The field named `image`, a model by path, top_k and priority as form fields.
    form = {"model_path": colour_model.model_path, "top_k": "1", "priority": "2", "device": "cpu"}
    answer = _predict(rest, {"image": ("blue.png", png(COLOURS["blue"]), "image/png")}, **form)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 1


def test_predict_errors(rest: Rest, colour_model: Model) -> None:
    image = ("x.png", png(COLOURS["green"]), "image/png")
    no_file = _predict(rest, {}, task_id=colour_model.task_id)
    assert no_file.status_code == 422 and "file" in no_file.json()["detail"]
    junk = _predict(rest, {"file": ("x.png", b"hello", "image/png")}, task_id=colour_model.task_id)
    assert junk.status_code == 400 and "PNG or JPEG" in junk.json()["detail"]
    assert _predict(rest, {"file": image}, task_id="no-such-task").status_code == 404
    assert _predict(rest, {"file": image}).status_code == 400  # neither task_id nor model_path
    gpu = _predict(rest, {"file": image}, task_id=colour_model.task_id, device="cuda")
    assert gpu.status_code == 409 and "no GPU" in gpu.json()["detail"]
    bad_k = _predict(rest, {"file": image}, task_id=colour_model.task_id, top_k="many")
    assert bad_k.status_code == 422 and "top_k" in bad_k.json()["detail"]


def test_seed_shapes_on_a_machine_with_a_gpu(fresh_rest: Callable[..., Rest]) -> None:
    """The seed's GPU snippets verbatim, against made-up GPU readings (the seed's numbers)."""
    gib = 2**30
    gpu = GpuInfo(0, "Fake GPU", 24 * gib, int(8.5 * gib), int(15.5 * gib))
    rest = fresh_rest(StaticInventory([gpu]), prewarm_workers=0)

    response = requests.get(f"{rest.url}/api/v2/resources", timeout=TIMEOUT)
    resources = response.json()
    assert resources["device_usage"]["cuda"] == {
        "training": 0,
        "inference": 0,
        "queued_training": 0,
        "queued_inference": 0,
    }
    memory = resources["gpu_memory_info"]["GPU_0"]
    assert (memory["total_gb"], memory["allocated_gb"], memory["free_gb"]) == (24.0, 8.5, 15.5)
    assert resources["max_concurrent"]["cuda"] == {"training": 1, "inference": 3}

    config = {"max_concurrent": {"cuda": {"training": 1, "inference": 5}}}
    changed = requests.post(f"{rest.url}/api/v2/resources/config", json=config, timeout=TIMEOUT)
    assert changed.status_code == 200, changed.text
    assert changed.json()["max_concurrent"]["cuda"] == {"training": 1, "inference": 5}
    resources = requests.get(f"{rest.url}/api/v2/resources", timeout=TIMEOUT).json()
    assert resources["max_concurrent"]["cuda"] == {"training": 1, "inference": 5}
    assert resources["max_concurrent"]["cuda:0"] == {"training": 1, "inference": 5}

    # The seed's training config on cuda is accepted (held in the queue here: this GPU is
    # made up, so nothing may run on it).
    hold = {"max_concurrent": {"cuda": {"training": 0}}}
    assert rest.post("/api/v2/resources/config", json=hold).ok
    train_config = {
        "model": "mobilenet_v3_small",
        "batch_size": 16,
        "device": "cuda",
        "priority": 7,
    }
    task = rest.post("/api/v2/train", json={**train_config, **SMALL}).json()
    assert (task["state"], task["device"], task["priority"]) == ("QUEUED", "cuda", 7)
    usage = rest.get("/api/v2/resources").json()["device_usage"]["cuda"]
    assert usage["queued_training"] == 1
    assert rest.post(f"/api/v2/tasks/{task['task_id']}/cancel").json()["state"] == "CANCELLED"
