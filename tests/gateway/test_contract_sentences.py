"""A value outside the contract gets the same sentence over gRPC and over REST: both take
it from `tandem.contract`. REST refuses most of them itself (422) before any call; the
rest it passes on and maps (400). Against the real server and gateway."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tandem.v1 import (
    inference_service_pb2,
    resource_service_pb2,
    resources_pb2,
    training_service_pb2,
)
from tests.conftest import Stubs
from tests.gateway.conftest import COLOURS, Model, Rest, png

TRAIN = {"model": "mobilenet_v3_small", "dataset": "synthetic", "image_size": 32, "device": "cpu"}


@pytest.fixture(scope="module")
def stubs(rest: Rest) -> Stubs:
    assert rest.server is not None
    return Stubs.connect(rest.server.port)


def _grpc_refusal(call: Any, request: Any) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return str(info.value.details())


def _rest_refusal(rest: Rest, path: str, body: dict[str, Any]) -> str:
    response = rest.post(path, json=body)
    assert response.status_code in (400, 422), response.text
    return str(response.json()["detail"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", 11),
        ("priority", -1),
        ("image_size", 8),
        ("image_size", 4096),
        ("optimizer", "lbfgs"),
        ("epochs", 0),
        ("epochs", 10_001),
        ("batch_size", 0),
        ("learning_rate", -1.0),
        ("learning_rate", 11.0),
        ("val_split", 0.95),
        ("request_id", "x" * 200),
    ],
)
def test_train(rest: Rest, stubs: Stubs, field: str, value: Any) -> None:
    body = {**TRAIN, field: value}
    over_grpc = _grpc_refusal(stubs.training.Train, training_service_pb2.TrainRequest(**body))
    assert field in over_grpc
    assert _rest_refusal(rest, "/api/v2/train", body) == over_grpc


@pytest.mark.parametrize(
    ("field", "value"), [("top_k", 0), ("top_k", 1001), ("batch_size", 0), ("priority", 11)]
)
def test_inference(rest: Rest, stubs: Stubs, colour_model: Model, field: str, value: Any) -> None:
    body = {"task_id": colour_model.task_id, "dataset": colour_model.dataset, field: value}
    request = inference_service_pb2.InferRequest(**body)
    over_grpc = _grpc_refusal(stubs.inference.Infer, request)
    assert field in over_grpc
    assert _rest_refusal(rest, "/api/v2/inference", body) == over_grpc


@pytest.mark.parametrize(("kind", "value"), [("training", 257), ("inference", -1)])
def test_limits(rest: Rest, stubs: Stubs, kind: str, value: int) -> None:
    limits = resources_pb2.ConcurrencyLimits(**{kind: value})
    request = resource_service_pb2.UpdateLimitsRequest(max_concurrent={"cpu": limits})
    over_grpc = _grpc_refusal(stubs.resources.UpdateLimits, request)
    assert "cpu" in over_grpc and kind in over_grpc
    body = {"max_concurrent": {"cpu": {kind: value}}}
    assert _rest_refusal(rest, "/api/v2/resources/config", body) == over_grpc


@pytest.mark.parametrize(("field", "value"), [("top_k", 0), ("priority", 11)])
def test_predict(rest: Rest, stubs: Stubs, colour_model: Model, field: str, value: int) -> None:
    image = png(COLOURS["red"])
    request = inference_service_pb2.PredictRequest(
        image=image, task_id=colour_model.task_id, **{field: value}
    )
    over_grpc = _grpc_refusal(stubs.inference.Predict, request)
    assert field in over_grpc
    form = {"task_id": colour_model.task_id, field: str(value)}
    response = rest.post("/api/v2/predict", files={"file": ("red.png", image)}, data=form)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == over_grpc
