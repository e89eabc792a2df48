"""tritonclient's gRPC client, unchanged, against a real `tandem serve`'s gRPC port (run
in a child process: see `triton_grpc.py`), and Tandem's `inference` package checked
field by field against tritonclient's own definition of the protocol."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from tandem.inference import open_inference_pb2
from tests.oip import triton_grpc
from tests.oip.conftest import CLASSES, IMAGE_SIZE, NAME, Published, png
from tests.oip.triton_grpc import b64

RED, BLUE = (220, 40, 30), (30, 60, 220)


def infer(published: Published, **args: Any) -> tuple[str, dict[str, Any]]:
    return ("infer", {"url": published.grpc_url, "name": NAME, **args})


def images(*files: bytes) -> dict[str, Any]:
    return {
        "input_name": "image_bytes",
        "datatype": "BYTES",
        "shape": [len(files)],
        "data": [b64(f) for f in files],
    }


def test_the_definition_matches_tritonclients_field_for_field() -> None:
    ours = open_inference_pb2.DESCRIPTOR.serialized_pb
    [mismatches] = triton_grpc.run(("wire_mismatches", {"ours": b64(ours)}))
    # The one field Triton's definition lacks: MLServer's extension, at a number unused.
    assert mismatches == ["extra inference.ModelMetadataResponse.parameters = 6"]


def test_health_and_metadata(published: Published) -> None:
    url = published.grpc_url
    health, unknown, server, model, first = triton_grpc.run(
        ("health", {"url": url, "name": NAME}),
        ("health", {"url": url, "name": "nosuch"}),
        ("server_metadata", {"url": url}),
        ("model_metadata", {"url": url, "name": NAME}),
        ("model_metadata", {"url": url, "name": NAME, "version": "production"}),
    )
    assert health == {"live": True, "ready": True, "model_ready": True}
    assert unknown["model_ready"] is False
    assert server["name"] == "tandem"
    assert "classification" in server["extensions"]
    assert model["versions"] == ["1", "2"]
    assert model["platform"] == "pytorch_torchvision"
    # int64 shapes are JSON strings in protobuf's JSON
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]] == [
        ("image_bytes", "BYTES", ["-1"]),
        ("images", "FP32", ["-1", "3", str(IMAGE_SIZE), str(IMAGE_SIZE)]),
    ]
    assert model["outputs"][0]["shape"] == ["-1", str(len(CLASSES))]
    assert first["name"] == NAME


def test_encoded_images_get_the_probabilities_predict_gives(published: Published) -> None:
    files = (png(RED), png(BLUE))
    [answer] = triton_grpc.run(infer(published, **images(*files), request_id="r1"))

    assert (answer["model_version"], answer["id"], answer["shape"]) == ("2", "r1", [2, 4])
    rows = [answer["data"][:4], answer["data"][4:]]
    for row, image in zip(rows, files, strict=True):
        predicted = published.predict(image, published.task_ids[1], top_k=len(CLASSES))
        order = sorted(range(len(row)), key=lambda i: -row[i])
        assert [CLASSES[i] for i in order] == [p.label for p in predicted.predictions]
        for p in predicted.predictions:
            assert row[p.index] == pytest.approx(p.score, abs=1e-5)


def test_fp32_tensors_and_classification(published: Published) -> None:
    # A uniform mid-grey tensor of the model's size, normalised: any finite values do.
    values = [0.25] * (2 * 3 * IMAGE_SIZE * IMAGE_SIZE)
    pixels = b64(struct.pack(f"<{len(values)}f", *values))
    tensor = {"input_name": "images", "datatype": "FP32", "shape": [2, 3, 32, 32]}
    probabilities, top = triton_grpc.run(
        infer(published, **tensor, data=pixels),
        infer(published, **tensor, data=pixels, classification=3),
    )
    assert probabilities["shape"] == [2, len(CLASSES)]
    assert sum(probabilities["data"][:4]) == pytest.approx(1.0, abs=1e-5)
    assert top["datatype"] == "BYTES" and top["shape"] == [2, 3]
    best = max(range(4), key=lambda i: probabilities["data"][i])
    score, index, label = top["data"][0].split(":")
    assert (int(index), label) == (best, CLASSES[best])
    assert float(score) == pytest.approx(probabilities["data"][best], abs=1e-5)


def test_versions_by_number_and_alias(published: Published) -> None:
    first, production, second = triton_grpc.run(
        infer(published, **images(png(RED)), version="1"),
        infer(published, **images(png(RED)), version="production"),
        infer(published, **images(png(RED)), version="2"),
    )
    assert (first["model_version"], production["model_version"]) == ("1", "1")
    assert first["data"] == production["data"] != second["data"]


def test_refusals_carry_the_status_and_a_sentence(published: Published) -> None:
    tiny = b64(struct.pack("<12f", *([0.0] * 12)))
    red = images(png(RED))
    cases = [
        ({**red, "shape": [1, 2]}, "INVALID_ARGUMENT", "must have shape [N] or [N, 1]"),
        (
            {"input_name": "images", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": tiny},
            "INVALID_ARGUMENT",
            "this model's image size is 32",
        ),
        (images(b"GIF89a not an image"), "INVALID_ARGUMENT", "not a PNG or JPEG image"),
        ({**red, "version": "7"}, "NOT_FOUND", "has no version 7; its versions are 1, 2"),
        ({**red, "name": "nosuch"}, "NOT_FOUND", "model 'nosuch' does not exist"),
        ({**red, "parameters": {"device": "cuda:9"}}, "FAILED_PRECONDITION", "cuda"),
        ({**red, "priority": 11}, "INVALID_ARGUMENT", "priority must be between 0 and 10"),
    ]
    answers = triton_grpc.run(*(infer(published, **args) for args, _, _ in cases))
    for answer, (_, status, sentence) in zip(answers, cases, strict=True):
        assert answer["error"]["status"] == f"StatusCode.{status}", answer
        assert sentence in answer["error"]["message"], answer


def test_metadata_parameters_reach_a_client_that_knows_the_extension(
    published: Published,
) -> None:
    # tritonclient drops the field it does not define; Tandem's own stubs read it.
    import grpc

    from tandem.inference import open_inference_pb2_grpc

    stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(published.channel)
    answer = stub.ModelMetadata(
        open_inference_pb2.ModelMetadataRequest(name=NAME, version="1"), timeout=30
    )
    assert answer.parameters["version"].int64_param == 1
    assert json.loads(answer.parameters["classes"].string_param) == list(CLASSES)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelMetadata(open_inference_pb2.ModelMetadataRequest(name=""), timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
