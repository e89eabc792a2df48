"""tritonclient's HTTP client, unchanged, against a real `tandem serve`'s REST port: the
Open Inference Protocol's health, metadata and inference, with the binary tensor data
extension it uses by default, and its answers equal to Predict's."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.oip.conftest import CLASSES, IMAGE_SIZE, NAME, Published, png

RED, BLUE = (220, 40, 30), (30, 60, 220)


@pytest.fixture(scope="module")
def client(published: Published) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(published.http_url, network_timeout=120)


def encoded(*images: bytes) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image_bytes", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def normalised(image: bytes, metadata: dict[str, object]) -> np.ndarray:
    """The model's input for a PNG of its own size, made as its metadata says."""
    from io import BytesIO

    from PIL import Image

    parameters = metadata["parameters"]
    assert isinstance(parameters, dict)
    mean = np.array(json.loads(parameters["mean"]), dtype=np.float32).reshape(3, 1, 1)
    std = np.array(json.loads(parameters["std"]), dtype=np.float32).reshape(3, 1, 1)
    pixels = np.asarray(Image.open(BytesIO(image)).convert("RGB"), dtype=np.float32) / 255
    return ((pixels.transpose(2, 0, 1) - mean) / std).astype(np.float32)


def test_the_server_is_live_and_ready_and_says_what_it_supports(
    client: httpclient.InferenceServerClient,
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "tandem"
    assert {"classification", "binary_tensor_data"} <= set(metadata["extensions"])


def test_model_metadata_gives_versions_tensors_and_the_normalisation(
    client: httpclient.InferenceServerClient,
) -> None:
    metadata = client.get_model_metadata(NAME)

    assert metadata["name"] == NAME
    assert metadata["versions"] == ["1", "2"]
    assert metadata["platform"] == "pytorch_torchvision"
    assert metadata["inputs"] == [
        {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        {"name": "images", "datatype": "FP32", "shape": [-1, 3, IMAGE_SIZE, IMAGE_SIZE]},
    ]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(CLASSES)]}
    ]
    parameters = metadata["parameters"]
    assert parameters["version"] == 2  # the latest
    assert json.loads(parameters["classes"]) == list(CLASSES)
    assert len(json.loads(parameters["mean"])) == len(json.loads(parameters["std"])) == 3
    assert client.get_model_metadata(NAME, "1")["parameters"]["version"] == 1


def test_encoded_images_get_the_probabilities_predict_gives(
    client: httpclient.InferenceServerClient, published: Published
) -> None:
    images = (png(RED), png(BLUE), png(RED, size=64))
    result = client.infer(NAME, [encoded(*images)])

    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, len(CLASSES)) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert result.get_response()["model_version"] == "2"
    for row, image in zip(probabilities, images, strict=True):
        predicted = published.predict(image, published.task_ids[1], top_k=len(CLASSES))
        order = np.argsort(-row, kind="stable")
        assert [CLASSES[i] for i in order] == [p.label for p in predicted.predictions]
        for p in predicted.predictions:
            assert row[p.index] == pytest.approx(p.score, abs=1e-5)


def test_fp32_tensors_normalised_as_the_metadata_says_answer_as_their_png(
    client: httpclient.InferenceServerClient,
) -> None:
    images = (png(RED, size=IMAGE_SIZE), png(BLUE, size=IMAGE_SIZE))
    metadata = client.get_model_metadata(NAME)
    batch = np.stack([normalised(image, metadata) for image in images])
    tensor = httpclient.InferInput("images", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)

    from_pixels = client.infer(NAME, [tensor]).as_numpy("probabilities")
    from_files = client.infer(NAME, [encoded(*images)]).as_numpy("probabilities")

    assert np.allclose(from_pixels, from_files, atol=1e-5)


def test_classification_answers_the_top_k_as_score_index_label_strings(
    client: httpclient.InferenceServerClient, published: Published
) -> None:
    wanted = httpclient.InferRequestedOutput("probabilities", class_count=2)
    result = client.infer(NAME, [encoded(png(RED), png(BLUE))], outputs=[wanted])

    answers = result.as_numpy("probabilities")
    assert answers.shape == (2, 2)
    for row, image in zip(answers, (png(RED), png(BLUE)), strict=True):
        predicted = published.predict(image, published.task_ids[1], top_k=2).predictions
        parsed = [item.decode().split(":") for item in row]
        assert [(int(i), label) for _, i, label in parsed] == [
            (p.index, p.label) for p in predicted
        ]
        for (score, _, _), p in zip(parsed, predicted, strict=True):
            assert float(score) == pytest.approx(p.score, abs=1e-5)


def test_a_version_number_or_an_alias_chooses_the_version(
    client: httpclient.InferenceServerClient,
) -> None:
    image = encoded(png(RED))

    def answer(version: str) -> tuple[str, np.ndarray]:
        result = client.infer(NAME, [image], model_version=version)
        return result.get_response()["model_version"], result.as_numpy("probabilities")

    latest, first, second, production = answer(""), answer("1"), answer("2"), answer("production")
    assert (latest[0], first[0], second[0], production[0]) == ("2", "1", "2", "1")
    assert np.array_equal(latest[1], second[1]) and np.array_equal(production[1], first[1])
    assert not np.allclose(first[1], second[1])  # two trainings, two models
    assert client.is_model_ready(NAME, "1") and client.is_model_ready(NAME, "production")


def test_json_tensors_in_and_out_without_binary_data(
    client: httpclient.InferenceServerClient,
) -> None:
    tensor = httpclient.InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([png(RED)], dtype=np.object_), binary_data=True)
    wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)
    result = client.infer(NAME, [tensor], outputs=[wanted], request_id="req-7")

    response = result.get_response()
    assert response["id"] == "req-7"
    assert len(response["outputs"][0]["data"]) == len(CLASSES)  # JSON numbers, not binary
    assert result.as_numpy("probabilities").shape == (1, len(CLASSES))


def bytes_input(name: str, claimed: list[int]) -> httpclient.InferInput:
    """One PNG, under `name`, claiming the shape `claimed`."""
    tensor = httpclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([png(RED)], dtype=np.object_))
    tensor.set_shape(claimed)
    return tensor


def zeros_input(shape: list[int], datatype: str) -> httpclient.InferInput:
    tensor = httpclient.InferInput("images", shape, datatype)
    tensor.set_data_from_numpy(np.zeros(shape, np.float64 if datatype == "FP64" else np.float32))
    return tensor


def int_input(name: str) -> httpclient.InferInput:
    """An input neither by name nor by datatype one of the model's."""
    tensor = httpclient.InferInput(name, [1], "INT32")
    tensor.set_data_from_numpy(np.zeros([1], np.int32))
    return tensor


def test_an_input_of_the_callers_own_name_is_taken_by_its_datatype(
    client: httpclient.InferenceServerClient,
) -> None:
    """KServe's examples name a model's one input `input-0`: a BYTES tensor is the
    encoded images whatever its name, and answers as `image_bytes` does."""
    named = client.infer(NAME, [bytes_input("image_bytes", [1])]).as_numpy("probabilities")
    own = client.infer(NAME, [bytes_input("input-0", [1])]).as_numpy("probabilities")
    assert np.array_equal(named, own)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: bytes_input("image_bytes", [2]), "has shape [2] but holds 1 elements"),
        (lambda: bytes_input("image_bytes", [1, 2]), "must have shape [N] or [N, 1]"),
        (lambda: zeros_input([1, 3, 8, 8], "FP32"), "this model's image size is 32"),
        (lambda: zeros_input([1, 3, 32, 32], "FP64"), "must be FP32, got FP64"),
        (lambda: int_input("pixels"), "unknown input 'pixels'"),
    ],
)
def test_a_wrong_shape_datatype_or_name_is_refused_with_a_sentence(
    client: httpclient.InferenceServerClient,
    make: Callable[[], httpclient.InferInput],
    says: str,
) -> None:
    with pytest.raises(InferenceServerException) as refused:
        client.infer(NAME, [make()])

    assert refused.value.status() == "400"
    assert says in refused.value.message()


def test_an_unknown_model_or_version_is_not_found_and_not_ready(
    client: httpclient.InferenceServerClient,
) -> None:
    for name, version in (("nosuch", ""), (NAME, "9"), (NAME, "staging")):
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata(name, version)
        assert refused.value.status() == "404"
        assert "nosuch" in refused.value.message() or NAME in refused.value.message()
        assert not client.is_model_ready(name, version)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("nosuch", [encoded(png(RED))])
    assert refused.value.status() == "404"
    assert "model 'nosuch' does not exist" in refused.value.message()
