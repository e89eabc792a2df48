"""The training recipe and the weights a training starts from, over REST: bad values are
422 with the contract's sentence naming the field (cross-field rules too), good ones
reach the server and come back under the task's `training`."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tests.gateway.conftest import Model, Rest, follow_logs

TRAIN: dict[str, Any] = {
    "model": "mobilenet_v3_small",
    "dataset": "synthetic",
    "image_size": 32,
    "device": "cpu",
}

BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"augment": "heavy"}, "augment"),
    ({"lr_schedule": "linear"}, "lr_schedule"),
    ({"precision": "fp8"}, "precision"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"weight_decay": 2.0}, "weight_decay"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"label_smoothing": math.nan}, "label_smoothing"),
    ({"epochs": 2, "warmup_epochs": 2}, "warmup_epochs"),
    ({"epochs": 2, "freeze_epochs": 3, "pretrained": "DEFAULT"}, "freeze_epochs"),
    ({"epochs": 2, "freeze_epochs": 1}, "freeze_epochs"),  # no weights to start from
    ({"early_stopping_patience": -1}, "early_stopping_patience"),
    ({"early_stopping_patience": 2, "val_split": 0.0}, "early_stopping_patience"),
    ({"init_from": "some-task", "pretrained": "DEFAULT"}, "init_from"),
    ({"pretrained": "DEFAULT", "weights_path": "w.pth"}, "weights_path"),
    ({"model": None}, "model"),  # neither a model nor init_from to take one from
]


def _id(fields: dict[str, Any]) -> str:
    return ",".join(f"{key}={value}" for key, value in fields.items())


def _body(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {**TRAIN, **fields}.items() if v is not None}


@pytest.mark.parametrize(("fields", "field"), BAD_BODIES, ids=[_id(f) for f, _ in BAD_BODIES])
def test_bad_recipe_values_are_422_naming_the_field(
    rest: Rest, fields: dict[str, Any], field: str
) -> None:
    # Written by hand: `requests` refuses to send NaN, which Python's JSON (and many
    # clients') writes as a bare `NaN`.
    raw = json.dumps(_body(fields))
    response = rest.post("/api/v2/train", data=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and field in detail, detail


def test_v1_refuses_a_bad_recipe_value_the_same_way(rest: Rest) -> None:
    v1 = rest.post("/api/v1/train", json=_body({"augment": "heavy"}))
    v2 = rest.post("/api/v2/train", json=_body({"augment": "heavy"}))
    assert v1.status_code == 422, v1.text
    assert v1.json()["detail"] == v2.json()["detail"]
    assert "augment" in v1.json()["detail"] and "heavy" in v1.json()["detail"]


def test_unknown_pretrained_weights_are_refused_by_the_server(rest: Rest) -> None:
    # The name's validity depends on the model: the server's check, so 400, not 422.
    response = rest.post("/api/v2/train", json=_body({"model": "resnet18", "pretrained": "NOPE"}))
    assert response.status_code == 400, response.text
    assert "pretrained" in response.json()["detail"] and "NOPE" in response.json()["detail"]


def test_a_good_recipe_is_accepted_and_shown_under_training(rest: Rest) -> None:
    recipe = {
        "optimizer": "adamw",
        "epochs": 2,
        "augment": "light",
        "weight_decay": 0.05,
        "label_smoothing": 0.2,
        "lr_schedule": "step",
        "warmup_epochs": 1,
        "early_stopping_patience": 1,
        "precision": "fp32",
    }
    response = rest.post("/api/v2/train", json={**TRAIN, **recipe})
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    try:
        shown = rest.get(f"/api/v2/tasks/{task_id}")
        assert shown.status_code == 200, shown.text
        training = shown.json()["training"]
        assert {key: training[key] for key in recipe} == recipe
        assert training["freeze_epochs"] == 0
        assert (training["init_from"], training["pretrained"], training["weights_path"]) == (
            "",
            "",
            "",
        )
    finally:
        rest.post(f"/api/v2/tasks/{task_id}/cancel")


def test_init_from_without_a_model_is_accepted(rest: Rest, colour_model: Model) -> None:
    body = {
        "init_from": colour_model.task_id,
        "dataset": colour_model.dataset,
        "epochs": 1,
        "batch_size": 6,
        "val_split": 0.0,
        "device": "cpu",
    }
    response = rest.post("/api/v2/train", json=body)
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["training"]["init_from"] == colour_model.task_id
    assert task["training"]["model"] == "resnet18" and task["training"]["image_size"] == 24
    events = follow_logs(rest, task["task_id"], version="v2")
    assert events[-1].data["state"] == "SUCCEEDED", events[-3:]
    started = [e.data["message"] for e in events if e.data["message"].startswith("started from")]
    assert started and started[0].startswith(f"started from task {colour_model.task_id}'s model")
