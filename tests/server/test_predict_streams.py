"""A served model's streams: batches that are ready together run at once in its one
worker, up to its thread count and `predict_max_streams`, with the same answers."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from engines import zoo
from engines.artifacts import save_artifact
from server.backends import local_cores
from tandem.v1 import inference_service_pb2, resource_service_pb2, resources_pb2
from tests.conftest import ServerThread, Stubs

IMAGES = 6


def _model(path: Path) -> Path:
    torch.manual_seed(0)
    save_artifact(
        str(path),
        model=zoo.build_model("resnet18", 4, 32),
        architecture="resnet18",
        classes=["a", "b", "c", "d"],
        image_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        epoch=0,
        metrics={},
    )
    return path


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (shade, 255 - shade, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def _set_inference_limit(stubs: Stubs, inference: int) -> None:
    limits = resources_pb2.ConcurrencyLimits(training=2, inference=inference)
    stubs.resources.UpdateLimits(
        resource_service_pb2.UpdateLimitsRequest(max_concurrent={"cpu": limits}), timeout=30
    )


@pytest.mark.parametrize("streams", [1, 2])
def test_batches_ready_together_run_at_once_up_to_the_streams(
    fresh_server: Callable[..., ServerThread], streams: int
) -> None:
    if local_cores("cpu") < 2:
        pytest.skip("two streams need two cores (a stream per thread)")
    server = fresh_server(predict_max_batch=1, predict_max_streams=streams)
    service = server.service
    assert service is not None
    model = str(_model(server.config.data_dir / "model.pt"))
    stubs = Stubs.connect(server.port)
    images = [_png(40 * i) for i in range(IMAGES)]

    def predict(image: bytes) -> list[tuple[str, float]]:
        request = inference_service_pb2.PredictRequest(image=image, model_path=model, top_k=4)
        answer = stubs.inference.Predict(request, timeout=120)
        return [(p.label, p.score) for p in answer.predictions]

    # Hold the model's load back until every request waits for it, so that the
    # batches (one image each) are all ready at once when it starts.
    _set_inference_limit(stubs, 0)
    with ThreadPoolExecutor(IMAGES) as pool:
        futures = [pool.submit(predict, image) for image in images]
        deadline = time.monotonic() + 120
        while server.call(service.model_server.waiting) < IMAGES:  # on their way
            assert time.monotonic() < deadline, "the Predict calls never all arrived"
        _set_inference_limit(stubs, 4)
        together = [future.result() for future in futures]
    assert server.call(lambda: service.model_server.most_in_flight) == streams
    alone = [predict(image) for image in images]
    for one, other in zip(alone, together, strict=True):
        assert [label for label, _ in one] == [label for label, _ in other]
        assert [s for _, s in one] == pytest.approx([s for _, s in other], abs=1e-5)
    stubs.channel.close()
