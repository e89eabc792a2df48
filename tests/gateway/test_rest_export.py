"""`POST /api/v2/models/export` through the real gateway and server: the export's answer
as JSON, and the 4xx of a bad body, an unknown task or a file that is no model."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.gateway.conftest import Model, Rest

PATH = "/api/v2/models/export"


def test_a_task_model_exports_and_answers_with_the_file(rest: Rest, colour_model: Model) -> None:
    response = rest.post(PATH, json={"task_id": colour_model.task_id, "format": "ONNX"})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["path"] == os.path.join(os.path.dirname(colour_model.model_path), "model.onnx")
    assert answer["format"] == "onnx" and answer["opset"] >= 17
    assert answer["size_bytes"] == os.path.getsize(answer["path"])
    assert 0 <= answer["max_abs_diff"] <= 1e-4
    assert answer["task_id"] == colour_model.task_id
    assert answer["model_path"] == colour_model.model_path
    assert answer["export_seconds"] > 0


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"task_id": "t"}, 422, "format: Field required"),
        ({"task_id": "t", "format": "tflite"}, 422, "unknown format 'tflite'; choose one of onnx"),
        ({"task_id": "t", "format": 1}, 422, "format: Input should be a valid string"),
        ({"task_id": "t", "format": "onnx", "opset": 17}, 422, "unknown field 'opset'"),
        ({"task_id": "nope", "format": "onnx"}, 404, "task 'nope' does not exist"),
        ({"format": "onnx"}, 400, "give exactly one of task_id"),
        ({"model_path": "/etc/passwd", "format": "onnx"}, 403, "outside the allowed roots"),
    ],
)
def test_bad_requests_are_4xx_with_a_sentence(
    rest: Rest, body: dict[str, Any], status: int, detail: str
) -> None:
    response = rest.post(PATH, json=body)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_a_file_that_is_no_model_is_400(rest: Rest) -> None:
    assert rest.server is not None
    path = rest.server.config.data_dir / "not-a-model.pt"
    path.write_bytes(b"junk")
    response = rest.post(PATH, json={"model_path": str(path), "format": "torchscript"})
    assert response.status_code == 400, response.text
    assert "is not a usable Tandem model" in response.json()["detail"]


def test_the_openapi_document_lists_the_formats(rest: Rest) -> None:
    document = rest.get("/openapi.json").json()
    assert "post" in document["paths"][PATH]
    body = document["components"]["schemas"]["ExportBody"]
    assert body["properties"]["format"]["enum"] == ["onnx", "torchscript"]
    assert body["required"] == ["format"]
