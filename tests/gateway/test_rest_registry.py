"""The model registry over REST, through the real gateway and server: `model_name` on
train publishes versions, `/api/v2/models...` lists, shows, aliases and deletes them,
and a reference names the model in inference, predict and export; bad input is 4xx
with a sentence."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.gateway.conftest import COLOURS, TIMEOUT, Model, Rest, follow_logs, png

NAME = "rest-colours"


def put(rest: Rest, path: str, body: Any) -> requests.Response:
    return requests.put(rest.url + path, json=body, timeout=TIMEOUT)


def delete(rest: Rest, path: str) -> requests.Response:
    return requests.delete(rest.url + path, timeout=TIMEOUT)


def publish(rest: Rest) -> str:
    """A tiny training on `colours` published under NAME; its task id."""
    body = {
        "model": "resnet18",
        "dataset": "colours",
        "image_size": 24,
        "batch_size": 6,
        "val_split": 0.0,
        "device": "cpu",
        "model_name": NAME,
    }
    response = rest.post("/api/v2/train", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["training"]["model_name"] == NAME
    task_id: str = response.json()["task_id"]
    assert follow_logs(rest, task_id)[-1].data["state"] == "SUCCEEDED"
    return task_id


@pytest.fixture(scope="module")
def published(rest: Rest, colour_model: Model) -> tuple[str, str]:
    """Versions 1 and 2 of NAME (the `colours` folder comes with `colour_model`)."""
    return publish(rest), publish(rest)


def test_names_are_listed_and_shown_with_their_versions(
    rest: Rest, published: tuple[str, str]
) -> None:
    listed = rest.get("/api/v2/models")
    assert listed.status_code == 200, listed.text
    entry = next(m for m in listed.json()["models"] if m["name"] == NAME)
    assert (entry["latest_version"], entry["version_count"], entry["versions"]) == (2, 2, [])

    shown = rest.get(f"/api/v2/models/{NAME}").json()
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert [v["task_id"] for v in shown["versions"]] == list(published)
    first = shown["versions"][0]
    assert first["architecture"] == "resnet18" and first["image_size"] == 24
    assert sorted(first["classes"]) == sorted(COLOURS)
    assert first["size_bytes"] > 0 and first["create_time"].endswith("Z")
    assert shown["latest"] == shown["versions"][1]


def test_an_alias_names_the_model_in_predict_inference_and_export(
    rest: Rest, published: tuple[str, str]
) -> None:
    aliased = put(rest, f"/api/v2/models/{NAME}/aliases/production", {"version": 1})
    assert aliased.status_code == 200, aliased.text
    assert aliased.json()["previous_version"] == 0
    assert aliased.json()["version"]["aliases"] == ["production"]
    assert rest.get(f"/api/v2/models/{NAME}").json()["aliases"] == {"production": 1}

    image = {"file": ("red.png", png(COLOURS["red"]), "image/png")}
    answer = rest.post("/api/v2/predict", files=image, data={"model_name": f"{NAME}@production"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_name"] == f"{NAME}/1"

    body = {"model_name": NAME, "dataset": "colours", "device": "cpu"}
    task = rest.post("/api/v2/inference", json=body)
    assert task.status_code == 200, task.text
    assert task.json()["inference"]["model_name"] == f"{NAME}/2"
    assert task.json()["inference"]["task_id"] == published[1]
    assert follow_logs(rest, task.json()["task_id"])[-1].data["state"] == "SUCCEEDED"

    body = {"model_name": f"{NAME}/1", "format": "torchscript"}
    exported = rest.post("/api/v2/models/export", json=body)
    assert exported.status_code == 200, exported.text
    assert exported.json()["model_name"] == f"{NAME}/1"
    assert exported.json()["task_id"] == published[0]


def test_deletes_are_409_while_aliased_or_served_and_200_after(
    rest: Rest, published: tuple[str, str]
) -> None:
    assert put(rest, f"/api/v2/models/{NAME}/aliases/canary", {"version": 2}).ok
    aliased = delete(rest, f"/api/v2/models/{NAME}/versions/2")
    assert aliased.status_code == 409 and "is aliased ('canary')" in aliased.json()["detail"]

    unaliased = delete(rest, f"/api/v2/models/{NAME}/aliases/canary")
    assert unaliased.status_code == 200, unaliased.text
    assert unaliased.json() == {"name": NAME, "alias": "canary", "version": 2}

    # Version 1 answers a prediction, so the model server holds it; version 2 never does.
    image = {"file": ("red.png", png(COLOURS["red"]), "image/png")}
    assert rest.post("/api/v2/predict", files=image, data={"model_name": f"{NAME}/1"}).ok
    delete(rest, f"/api/v2/models/{NAME}/aliases/production")  # 404 if never set: fine
    served = delete(rest, f"/api/v2/models/{NAME}/versions/1")
    assert served.status_code == 409 and "is being served" in served.json()["detail"]

    gone = delete(rest, f"/api/v2/models/{NAME}/versions/2")
    assert gone.status_code == 200, gone.text
    assert gone.json()["version"]["task_id"] == published[1]
    assert [v["version"] for v in rest.get(f"/api/v2/models/{NAME}").json()["versions"]] == [1]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("GET", "/api/v2/models/nope", None, 404, "model 'nope' does not exist"),
        ("GET", "/api/v2/models/No%20Pe", None, 400, "name must be 1 to 64 characters"),
        ("PUT", "/api/v2/models/nope/aliases/a", {"version": 1}, 404, "does not exist"),
        ("PUT", f"/api/v2/models/{NAME}/aliases/latest", {"version": 1}, 400, "not 'latest'"),
        ("PUT", f"/api/v2/models/{NAME}/aliases/a", {"version": 0}, 422, "version must be"),
        ("PUT", f"/api/v2/models/{NAME}/aliases/a", {"version": "1"}, 422, "valid integer"),
        ("PUT", f"/api/v2/models/{NAME}/aliases/a", {}, 422, "version: Field required"),
        ("PUT", f"/api/v2/models/{NAME}/aliases/a", {"v": 1}, 422, "unknown field 'v'"),
        ("PUT", f"/api/v2/models/{NAME}/aliases/a", {"version": 99}, 404, "no version 99"),
        ("DELETE", f"/api/v2/models/{NAME}/aliases/none", None, 404, "no alias 'none'"),
        ("DELETE", f"/api/v2/models/{NAME}/versions/0", None, 422, "version"),
        ("DELETE", f"/api/v2/models/{NAME}/versions/x", None, 422, "version"),
        ("DELETE", f"/api/v2/models/{NAME}/versions/99", None, 404, "no version 99"),
        ("POST", "/api/v2/train", {"dataset": "synthetic", "model": "resnet18", "model_name": "A"},
         422, "model_name must be 1 to 64 characters"),
        ("POST", "/api/v2/inference", {"dataset": "synthetic", "model_name": "x@"}, 422,
         "is not a model reference"),
        ("POST", "/api/v2/inference", {"dataset": "synthetic", "model_name": "nope/1"}, 404,
         "model 'nope' does not exist"),
        ("POST", "/api/v2/models/export", {"model_name": "a//b", "format": "onnx"}, 422,
         "is not a model reference"),
    ],
)  # fmt: skip
def test_bad_input_is_4xx_with_a_sentence(
    rest: Rest,
    published: tuple[str, str],
    method: str,
    path: str,
    body: Any,
    status: int,
    detail: str,
) -> None:
    response = requests.request(method, rest.url + path, json=body, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_predict_refuses_a_malformed_reference_with_422(rest: Rest) -> None:
    image = {"file": ("red.png", png(COLOURS["red"]), "image/png")}
    answer = rest.post("/api/v2/predict", files=image, data={"model_name": "Bad Name"})
    assert answer.status_code == 422, answer.text
    assert "is not a model reference" in answer.json()["detail"]


def test_a_wrong_method_names_every_method_of_the_path(rest: Rest) -> None:
    # PUT and DELETE of an alias are two routes of one path: 405 lists both.
    response = requests.post(rest.url + "/api/v2/models/cats/aliases/production", timeout=TIMEOUT)
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, PUT"
