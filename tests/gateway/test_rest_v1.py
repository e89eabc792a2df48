"""The v1 REST API through real HTTP, as the standard service's users call it: train, follow
the log as server-sent events to the end, read the task, batch inference, health."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.gateway.conftest import Model, Rest, follow_logs

SMALL_TRAINING: dict[str, Any] = {
    "model": "mobilenet_v3_small",
    "dataset": "synthetic",
    "epochs": 1,
    "image_size": 32,
    "batch_size": 16,
}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_health(rest: Rest, version: str) -> None:
    response = rest.get(f"/api/{version}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "grpc_status": "SERVING"}


def test_v1_train_follow_the_log_live_then_read_the_task(rest: Rest) -> None:
    # The seed's v2.1 config, unchanged: it asks for a GPU, and
    # the server under test sees none (no_gpus), on any host.
    config = {"model": "resnet18", "device": "cuda", "dataset": "synthetic"}
    refused = rest.post("/api/v1/train", json=config)
    assert refused.status_code == 409
    assert "no GPU" in refused.json()["detail"]

    # On the CPU. (A key this API does not know is a 422: test_rest_unknown_fields.py.)
    body = {**SMALL_TRAINING, "device": "cpu"}
    response = rest.post("/api/v1/train", json=body)
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["state"] == "QUEUED" and task["kind"] == "training"
    assert task["model"] == "mobilenet_v3_small" and task["epochs"] == 1
    assert task["training"]["image_size"] == 32 and task["learning_rate"] == pytest.approx(1e-3)
    assert task["priority"] == 5 and task["top_k"] is None
    datetime.fromisoformat(task["create_time"])
    assert task["start_time"] is None and task["end_time"] is None

    # Followed from right after submit: history, then live events, to the terminal state.
    events = follow_logs(rest, task["task_id"])
    assert [int(e.id or 0) for e in events] == list(range(1, len(events) + 1))
    assert [e.data["seq"] for e in events] == [int(e.id or 0) for e in events]
    states = [e.data["state"] for e in events if e.data["type"] == "state"]
    assert states == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert events[-1].data["state"] == "SUCCEEDED"
    assert any("val_accuracy" in e.data["metrics"] for e in events)
    assert all(e.data["task_id"] == task["task_id"] for e in events)

    done = rest.get(f"/api/v1/tasks/{task['task_id']}").json()
    assert done["state"] == "SUCCEEDED" and done["assigned_device"] == "cpu"
    assert done["metrics"]["progress"] == 1.0 and done["model_path"].endswith("model.pt")
    assert datetime.fromisoformat(done["end_time"]) >= datetime.fromisoformat(done["start_time"])
    assert done["last_seq"] == len(events)


def test_history_from_seq_and_last_event_id(rest: Rest) -> None:
    task = rest.post("/api/v1/train", json={**SMALL_TRAINING, "device": "cpu"}).json()
    task_id = task["task_id"]
    everything = follow_logs(rest, task_id)
    last = len(everything)
    history = follow_logs(rest, task_id, follow="false")
    assert [e.id for e in history] == [e.id for e in everything]
    assert [e.data["seq"] for e in follow_logs(rest, task_id, from_seq=3)] == list(
        range(3, last + 1)
    )
    # A reconnecting EventSource sends the last id it saw; the stream resumes after it,
    # even if the URL still carries an older from_seq.
    resumed = follow_logs(rest, task_id, from_seq=1, headers={"Last-Event-ID": "2"})
    assert [e.data["seq"] for e in resumed] == list(range(3, last + 1))
    # Nothing left after the end of an ended task: 204, which stops an EventSource.
    ended = rest.get(f"/api/v1/tasks/{task_id}/logs", headers={"Last-Event-ID": str(last)})
    assert ended.status_code == 204 and ended.content == b""
    assert rest.get(f"/api/v2/tasks/{task_id}/logs", params={"from_seq": last + 5}).status_code == (
        204
    )


def test_v1_batch_inference_with_a_model_file(rest: Rest, colour_model: Model) -> None:
    body = {"model_path": colour_model.model_path, "dataset": "colours", "top_k": 2}
    response = rest.post("/api/v1/inference", json={**body, "device": "cpu"})
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["kind"] == "inference" and task["state"] == "QUEUED"
    assert task["model"] == "resnet18" and task["top_k"] == 2 and task["image_size"] == 24
    assert task["model_path"] == colour_model.model_path and task["epochs"] is None
    assert follow_logs(rest, task["task_id"])[-1].data["state"] == "SUCCEEDED"
    done = rest.get(f"/api/v1/tasks/{task['task_id']}").json()
    assert done["output_path"] and "accuracy" in done["metrics"]


def test_openapi_and_docs(rest: Rest) -> None:
    document = rest.get("/openapi.json").json()
    paths = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
    for version in ("v1", "v2"):
        assert {
            f"POST /api/{version}/train",
            f"POST /api/{version}/inference",
            f"GET /api/{version}/tasks/{{task_id}}",
            f"GET /api/{version}/tasks/{{task_id}}/logs",
            f"GET /api/{version}/health",
        } <= paths
    assert {
        "GET /api/v2/tasks",
        "POST /api/v2/tasks/{task_id}/cancel",
        "GET /api/v2/resources",
        "POST /api/v2/resources/config",
        "POST /api/v2/predict",
    } <= paths
    # Every field and parameter says what it is (with its range and default).
    undescribed = [
        f"{name}.{field}"
        for name, schema in document["components"]["schemas"].items()
        if name not in ("HTTPValidationError", "ValidationError")
        for field, spec in schema.get("properties", {}).items()
        if not spec.get("description")
    ]
    undescribed += [
        f"{path} {parameter['name']}"
        for path, ops in document["paths"].items()
        for op in ops.values()
        for parameter in op.get("parameters", [])
        if not parameter.get("description")
    ]
    assert undescribed == []
    train = document["components"]["schemas"]["TrainBody"]["properties"]
    priority = next(t for t in train["priority"]["anyOf"] if t["type"] == "integer")
    assert priority["minimum"] == 0 and priority["maximum"] == 10
    assert "Default 5" in train["priority"]["description"]
    docs = rest.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
