"""A JSON body with a field the API does not know is refused with 422 naming it, so a
legacy `lr` does not train with the default rate and a typo in a limits change does not
silently change nothing. Against the real server and gateway."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.conftest import Rest

TRAIN = {"model": "mobilenet_v3_small", "dataset": "synthetic", "image_size": 32, "device": "cpu"}


def _total_tasks(rest: Rest) -> int:
    listed = rest.get("/api/v2/tasks").json()
    return int(listed["total_training"] + listed["total_inference"])


@pytest.mark.parametrize(
    ("path", "body", "sentence"),
    [
        (
            "/api/v1/train",
            {**TRAIN, "lr": 0.1},
            "unknown field 'lr' in the body; the known fields are model, dataset, epochs, "
            "batch_size, learning_rate,",
        ),
        (
            "/api/v2/train",
            {**TRAIN, "lr": 0.1, "momentum": 0.9},
            "unknown fields 'lr', 'momentum' in the body;",
        ),
        (
            "/api/v1/inference",
            {"dataset": "synthetic", "task_id": "t", "model": "resnet18"},
            "unknown field 'model' in the body; the known fields are task_id, model_path,",
        ),
    ],
)
def test_submits_with_an_unknown_field_are_refused(
    rest: Rest, path: str, body: dict[str, Any], sentence: str
) -> None:
    before = _total_tasks(rest)
    response = rest.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(sentence)
    assert _total_tasks(rest) == before


@pytest.mark.parametrize(
    ("body", "sentence"),
    [
        (
            {"max_concurrent": {"cuda": {"infrence": 5}}},
            "unknown field 'infrence' in max_concurrent.cuda; "
            "the known fields are training, inference",
        ),
        (
            {"max_concurrent": {"cpu": {"training": 1, "infrence": 5}}},
            "unknown field 'infrence' in max_concurrent.cpu;",
        ),
        (
            {"max_concurent": {"cpu": {"inference": 5}}},
            "unknown field 'max_concurent' in the body; the known fields are max_concurrent",
        ),
    ],
)
def test_limit_changes_with_an_unknown_field_change_nothing(
    rest: Rest, body: dict[str, Any], sentence: str
) -> None:
    before = rest.get("/api/v2/resources").json()["max_concurrent"]
    response = rest.post("/api/v2/resources/config", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(sentence)
    assert rest.get("/api/v2/resources").json()["max_concurrent"] == before


def test_the_openapi_document_says_bodies_are_closed(rest: Rest) -> None:
    schemas = rest.get("/openapi.json").json()["components"]["schemas"]
    for name in ("TrainBody", "InferBody", "LimitsConfigBody", "LimitsBody"):
        assert schemas[name]["additionalProperties"] is False, name
