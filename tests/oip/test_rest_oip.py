"""The Open Inference Protocol's REST side as curl and KServe's published examples use
it (plain JSON), its errors (`{"error": ...}`), its deadline and priority parameters,
`/metrics`, and the token: through real HTTP to a real `tandem serve`."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import requests

from tests.harness.served import ServedProcess
from tests.oip import triton_grpc
from tests.oip.conftest import CLASSES, NAME, Published, png

RED = (220, 40, 30)


def url(published: Published, path: str) -> str:
    return f"{published.served.rest_url}{path}"


def base64_image_body(**extra: object) -> dict[str, object]:
    """One PNG as JSON: BYTES data in base64 (MLServer's `content_type`)."""
    return {
        "inputs": [
            {
                "name": "image_bytes",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(png(RED)).decode()],
            }
        ],
        **extra,
    }


def test_plain_json_as_curl_sends_it_gets_json_back(published: Published) -> None:
    body = base64_image_body(
        id="curl-1", outputs=[{"name": "probabilities", "parameters": {"classification": 2}}]
    )
    answer = requests.post(url(published, f"/v2/models/{NAME}/infer"), json=body, timeout=120)

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert (document["model_name"], document["model_version"], document["id"]) == (
        NAME,
        "2",
        "curl-1",
    )
    [output] = document["outputs"]
    assert (output["datatype"], output["shape"]) == ("BYTES", [1, 2])
    predicted = published.predict(png(RED), published.task_ids[1], top_k=2).predictions
    assert [item.split(":", 2)[2] for item in output["data"]] == [p.label for p in predicted]
    probabilities = requests.post(
        url(published, f"/v2/models/{NAME}/versions/1/infer"), json=base64_image_body(), timeout=120
    ).json()["outputs"][0]
    assert (probabilities["datatype"], probabilities["shape"]) == ("FP32", [1, len(CLASSES)])
    assert abs(sum(probabilities["data"]) - 1) < 1e-5


def test_probes_and_metadata_answer_json(published: Published) -> None:
    assert requests.get(url(published, "/v2/health/live"), timeout=10).json() == {"live": True}
    assert requests.get(url(published, "/v2/health/ready"), timeout=10).json() == {"ready": True}
    assert requests.get(url(published, "/v2"), timeout=10).json()["name"] == "tandem"
    ready = requests.get(url(published, f"/v2/models/{NAME}/versions/production/ready"), timeout=10)
    assert ready.json() == {"name": NAME, "ready": True}
    metadata = requests.get(url(published, f"/v2/models/{NAME}/versions/1"), timeout=10).json()
    assert metadata["parameters"]["version"] == 1


def test_every_bad_body_gets_a_400_with_the_protocols_error_object(
    published: Published,
) -> None:
    infer = url(published, f"/v2/models/{NAME}/infer")
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 10},
                }
            ]
        }
    ).encode()
    cases = [
        ({"data": b"{not json"}, "the body is not valid JSON"),
        ({"json": [1, 2]}, 'the body must be a JSON object with "inputs"'),
        ({"json": {"inputs": []}}, '"inputs" must be a non-empty list'),
        ({"json": {"inputs": [{"name": "images", "shape": [1], "datatype": "FP32"}]}}, "needs"),
        (
            {"json": {"inputs": [{"name": "x", "datatype": "FP32", "shape": ["a"], "data": []}]}},
            '"shape" must be a list of integers',
        ),
        (
            {"data": header + b"short", "headers": {"Inference-Header-Content-Length": "x"}},
            "must be a whole number",
        ),
        (
            {
                "data": header + b"short",
                "headers": {"Inference-Header-Content-Length": str(len(header))},
            },
            "binary_data_size is 10 but only 5 bytes",
        ),
        (
            {"json": base64_image_body(parameters={"priority": [1]})},
            "must be a boolean, a number or a string",
        ),
        ({"json": base64_image_body(parameters={"priority": 11})}, "priority must be between"),
        (
            {"json": {**base64_image_body(), "outputs": [{"name": "logits"}]}},
            "unknown output 'logits'",
        ),
        (
            {
                "json": {
                    "inputs": [
                        {
                            "name": "image_bytes",
                            "shape": [1025],
                            "datatype": "BYTES",
                            "data": [""] * 1025,
                        }
                    ]
                }
            },
            "a call may carry at most 1024",
        ),
        # Numbers JSON holds and the protocol cannot: past 64 bits, past float's range.
        (
            {"json": base64_image_body(parameters={"priority": 2**64})},
            "a number the protocol cannot carry",
        ),
        (
            {"json": {"inputs": [{"name": "images", "shape": [2**70], "datatype": "FP32"}]}},
            "a number the protocol cannot carry",
        ),
        (
            {
                "data": b'{"inputs": [{"name": "images", "shape": [1], "datatype": "FP32",'
                b' "data": [1' + b"0" * 400 + b"]}]}"
            },
            "a number the protocol cannot carry",
        ),
    ]
    for request, sentence in cases:
        answer = requests.post(infer, timeout=60, **request)
        assert answer.status_code == 400, (request, answer.text)
        assert sentence in answer.json()["error"], (request, answer.text)


def test_unknown_models_are_404_and_a_timeout_shorter_than_a_pass_is_504(
    published: Published,
) -> None:
    missing = requests.get(url(published, "/v2/models/nosuch"), timeout=10)
    assert missing.status_code == 404
    assert "model 'nosuch' does not exist" in missing.json()["error"]
    not_ready = requests.get(url(published, "/v2/models/nosuch/ready"), timeout=10)
    assert not_ready.status_code == 400 and not_ready.json()["ready"] is False
    # One microsecond: no forward pass answers within it, however fast the machine.
    late = requests.post(
        url(published, f"/v2/models/{NAME}/infer"),
        json=base64_image_body(parameters={"timeout": 1}),
        timeout=60,
    )
    assert late.status_code == 504
    assert "deadline" in late.json()["error"]


def test_metrics_count_model_infer_calls_by_outcome(published: Published) -> None:
    def count(outcome: str) -> float:
        text = requests.get(url(published, "/metrics"), timeout=10).text
        found = re.search(
            rf'tandem_model_infer_latency_seconds_count{{outcome="{outcome}"}} (\S+)', text
        )
        return float(found.group(1)) if found else 0.0

    ok, refused = count("ok"), count("INVALID_ARGUMENT")
    infer = url(published, f"/v2/models/{NAME}/infer")
    assert requests.post(infer, json=base64_image_body(), timeout=120).ok
    bad = base64_image_body(parameters={"priority": -1})
    assert requests.post(infer, json=bad, timeout=60).status_code == 400

    assert (count("ok"), count("INVALID_ARGUMENT")) == (ok + 1, refused + 1)


def test_the_token_guards_all_but_the_probes(tmp_path: Path) -> None:
    token = "s3cret"
    with ServedProcess(tmp_path / "data", env={"TANDEM_AUTH_TOKEN": token}) as served:
        rest = served.rest_url
        assert requests.get(f"{rest}/v2/health/ready", timeout=10).status_code == 200
        refused = requests.get(f"{rest}/v2/models/{NAME}", timeout=10)
        assert refused.status_code == 401
        assert "missing or wrong token" in refused.json()["error"]
        allowed = requests.get(
            f"{rest}/v2/models/{NAME}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert allowed.status_code == 404  # past the token: the registry is empty
        health, without, with_token = triton_grpc.run(
            ("health", {"url": served.grpc_address, "name": NAME, "token": token}),
            ("model_metadata", {"url": served.grpc_address, "name": NAME}),
            ("model_metadata", {"url": served.grpc_address, "name": NAME, "token": token}),
        )
        assert (health["live"], health["ready"], health["model_ready"]) == (True, True, False)
        assert without["error"]["status"] == "StatusCode.UNAUTHENTICATED"
        assert with_token["error"]["status"] == "StatusCode.NOT_FOUND"
