"""One real `tandem serve` for the Open Inference Protocol tests, with a model published
by name: two trainings of `shapes` (mobilenet_v3_small, 32 px, synthetic, 1 epoch,
seeds 0 and 1) are its versions 1 and 2, and `shapes@production` points at version 1.
tritonclient reaches it over gRPC and over HTTP exactly as it would reach Triton."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from PIL import Image

from tandem.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)
from tests.harness.served import ServedProcess

NAME = "shapes"
IMAGE_SIZE = 32
CLASSES = ("blue_stripes", "green_circle", "red_square", "yellow_cross")


@dataclass
class Published:
    """The served process and what the tests need to reach its model."""

    served: ServedProcess
    channel: grpc.Channel
    # The training tasks of versions 1 and 2.
    task_ids: tuple[str, str]

    @property
    def grpc_url(self) -> str:
        return self.served.grpc_address

    @property
    def http_url(self) -> str:
        """host:port, as tritonclient.http takes it."""
        return self.served.rest_url.removeprefix("http://")

    def predict(
        self, image: bytes, task_id: str, top_k: int
    ) -> inference_service_pb2.PredictResponse:
        stub = inference_service_pb2_grpc.InferenceServiceStub(self.channel)
        request = inference_service_pb2.PredictRequest(
            task_id=task_id, image=image, top_k=top_k, device="cpu"
        )
        response: inference_service_pb2.PredictResponse = stub.Predict(request, timeout=120)
        return response


def png(colour: tuple[int, int, int], size: int = 40) -> bytes:
    """A plain square of `colour` with a darker band, as a PNG file."""
    image = Image.new("RGB", (size, size), colour)
    image.paste((colour[0] // 3, colour[1] // 3, colour[2] // 3), (0, size // 3, size, size // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _train(channel: grpc.Channel, seed: int) -> str:
    training = training_service_pb2_grpc.TrainingServiceStub(channel)
    tasks = task_service_pb2_grpc.TaskServiceStub(channel)
    request = training_service_pb2.TrainRequest(
        model="mobilenet_v3_small",
        dataset="synthetic",
        device="cpu",
        image_size=IMAGE_SIZE,
        batch_size=16,
        epochs=1,
        seed=seed,
        model_name=NAME,
    )
    task = training.Train(request, timeout=30).task
    follow = task_service_pb2.LogsRequest(task_id=task.task_id, follow=True)
    last = [r.event for r in tasks.Logs(follow, timeout=300)][-1]
    assert last.state == task_pb2.TASK_STATE_SUCCEEDED, last.message
    return str(task.task_id)


@pytest.fixture(scope="package")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    data_dir: Path = tmp_path_factory.mktemp("oip") / "data"
    with ServedProcess(data_dir, "--prewarm-workers", "1") as served:
        channel = grpc.insecure_channel(served.grpc_address)
        first, second = _train(channel, seed=0), _train(channel, seed=1)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        models.SetModelAlias(
            model_service_pb2.SetModelAliasRequest(name=NAME, alias="production", version=1),
            timeout=30,
        )
        yield Published(served, channel, (first, second))
        channel.close()
