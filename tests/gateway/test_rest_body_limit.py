"""Request bodies are bounded before anything reads them: a declared or a streamed body
over the bound gets 413 with a `detail`, and smaller requests are untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.gateway.conftest import GatewayThread, Rest

LIMIT = 1024  # the upload bound of this gateway; the body bound adds 64 KiB of envelope
OVER = LIMIT + 64 * 1024 + 1


@pytest.fixture
def small_gateway(rest: Rest) -> Iterator[str]:
    assert rest.server is not None
    gateway = GatewayThread(f"127.0.0.1:{rest.server.port}", max_upload_bytes=LIMIT).start()
    yield gateway.url
    gateway.stop()


def test_a_declared_body_over_the_bound_is_refused_at_once(small_gateway: str) -> None:
    body = json.dumps({"model": "resnet18", "dataset": "x" * OVER})
    reply = requests.post(
        f"{small_gateway}/api/v1/train",
        data=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 413
    assert "larger than" in reply.json()["detail"]


def test_a_streamed_body_over_the_bound_is_refused(small_gateway: str) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"model": "resnet18", "dataset": "'
        for _ in range(OVER // 4096 + 1):
            yield b"x" * 4096
        yield b'"}'

    reply = requests.post(
        f"{small_gateway}/api/v1/train",
        data=chunks(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 413
    assert "larger than" in reply.json()["detail"]


def test_an_upload_over_the_image_bound_is_refused(small_gateway: str) -> None:
    files = {"file": ("big.png", b"\x89PNG" + b"\0" * OVER, "image/png")}
    reply = requests.post(f"{small_gateway}/api/v2/predict", files=files, timeout=30)
    assert reply.status_code == 413


def test_requests_under_the_bound_are_untouched(small_gateway: str) -> None:
    train = {"model": "no_such_model", "dataset": "synthetic"}
    reply = requests.post(f"{small_gateway}/api/v1/train", json=train, timeout=30)
    assert reply.status_code == 400 and "unknown model" in reply.json()["detail"], reply.text
    assert requests.get(f"{small_gateway}/api/v1/health", timeout=30).status_code == 200
