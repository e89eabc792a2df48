"""The Open Inference Protocol's ModelInfer against Predict: the same model, the same
image, the same server, the same run.

The model is resnet18 at 224 px, trained for one epoch on the built-in synthetic set
(4 classes) by a real Tandem server in this process (port 0, one prewarmed CPU worker,
default Predict settings) and published by name as `bench-oip` (`TrainRequest.
model_name`), so ModelInfer finds it in the registry. Every call carries the same
224x224 PNG (`bench.harness.make_png`), so both sides pay for its decode, the
transform and the forward pass, batched together as the serving path batches them.

- ModelInfer: `inference.GRPCInferenceService/ModelInfer` with Tandem's own stubs (the
  bench does not install tritonclient), `model_name="bench-oip"`, the PNG as a BYTES
  tensor [1] in `raw_input_contents` (4-byte length, then the file, as tritonclient
  sends it), no outputs named: the FP32 probabilities [1, 4] come back.
- Predict: `tandem.v1.InferenceService/Predict` of the same model by its training's
  `task_id` (Predict's own cached path), the same PNG, `top_k=5`, `device="cpu"`.

Each round runs a block of calls at concurrency 8 (eight threads on one channel) for
each side, ABBA (the order reversed every round) so that a slow moment of a shared
machine falls on both alike; a warm-up first loads the model. Throughput is calls over
the wall time of a side's blocks. `oip_c8_vs_predict` is ModelInfer's over Predict's.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import CALL_TIMEOUT_S, Tandem, concurrent_calls, make_png
from bench.report import Goal
from tandem.inference import open_inference_pb2, open_inference_pb2_grpc
from tandem.v1 import inference_service_pb2

__all__ = ["FULL", "GOALS", "SMOKE", "Settings", "measure", "run"]

NAME = "bench-oip"
CONCURRENCY = 8
TOP_K = 5

GOALS = (Goal("oip_c8_vs_predict", minimum=0.95),)


@dataclass(frozen=True)
class Settings:
    """How much to measure: the model's image size, rounds, calls per side per round."""

    image_size: int
    rounds: int
    calls: int
    warmup: int


# 12 rounds x 48 calls per side at 224 px (short blocks, so the load of anything else
# on the machine falls on both sides alike): about two minutes after the training.
FULL = Settings(image_size=224, rounds=12, calls=48, warmup=16)
# A tiny model and a handful of calls: the harness, not the figures.
SMOKE = Settings(image_size=32, rounds=2, calls=8, warmup=8)


def run(smoke: bool) -> dict[str, float]:
    """Measure with the FULL settings, or SMOKE ones that only check the harness."""
    return measure(SMOKE if smoke else FULL)


def model_infer_call(tandem: Tandem, png: bytes) -> Callable[[], None]:
    """One ModelInfer of `png` by the published name, checked."""
    stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(tandem.channel)
    request = open_inference_pb2.ModelInferRequest(
        model_name=NAME,
        inputs=[
            open_inference_pb2.ModelInferRequest.InferInputTensor(
                name="image_bytes", datatype="BYTES", shape=[1]
            )
        ],
        raw_input_contents=[struct.pack("<I", len(png)) + png],
    )

    def call() -> None:
        answer = stub.ModelInfer(request, timeout=CALL_TIMEOUT_S)
        assert list(answer.outputs[0].shape) == [1, 4]

    return call


def predict_call(tandem: Tandem, task_id: str, png: bytes) -> Callable[[], None]:
    """One Predict of `png` by the training's task id, checked."""
    request = inference_service_pb2.PredictRequest(
        task_id=task_id, image=png, top_k=TOP_K, device="cpu"
    )

    def call() -> None:
        answer = tandem.inference.Predict(request, timeout=CALL_TIMEOUT_S)
        assert len(answer.predictions) == 4  # top-5 of 4 classes

    return call


def measure(settings: Settings) -> dict[str, float]:
    """Both sides measured in ABBA turns; see the module docstring."""
    png = make_png(224)
    with (
        tempfile.TemporaryDirectory(prefix="tandem-bench-oip-") as tmp,
        Tandem(Path(tmp) / "data", prewarm_workers=1) as tandem,
    ):
        task = tandem.train(
            model="resnet18",
            dataset="synthetic",
            device="cpu",
            image_size=settings.image_size,
            batch_size=32,
            epochs=1,
            model_name=NAME,
        )
        tandem.succeeded(task.task_id)
        infer = model_infer_call(tandem, png)
        predict = predict_call(tandem, task.task_id, png)
        for call in (infer, predict):  # the first call loads the model
            concurrent_calls(call, settings.warmup, CONCURRENCY)
        seconds = {"infer": 0.0, "predict": 0.0}
        sides = [("infer", infer), ("predict", predict)]
        for round_ in range(settings.rounds):
            for name, call in sides if round_ % 2 == 0 else reversed(sides):
                seconds[name] += concurrent_calls(call, settings.calls, CONCURRENCY)
    calls = settings.rounds * settings.calls
    infer_per_s, predict_per_s = calls / seconds["infer"], calls / seconds["predict"]
    return {
        "oip_c8_per_s": infer_per_s,
        "oip_predict_c8_per_s": predict_per_s,
        "oip_c8_vs_predict": infer_per_s / predict_per_s,
    }
