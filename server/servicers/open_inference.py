"""`inference.GRPCInferenceService`: the Open Inference Protocol (KServe v2) over the
model registry, so that tritonclient and KServe's clients use Tandem's models unchanged.

A model is a registry name; a version is a version number or an alias, and none means
the latest. ModelInfer takes the same path as Predict (`ModelServer.answer`): the model
is loaded into a worker holding one inference slot, its images batch with every other
caller's, the request parameter `priority` (0 .. 10, default 5) orders its admission,
and the caller's deadline (or a `timeout` parameter, in microseconds) is honoured. The
tensors are `server.oip_tensors`'.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
from typing import Literal, overload

import grpc

from server import validation
from server.device_registry import DeviceRegistry
from server.errors import Context, ServiceError, invalid_argument, unary
from server.metrics import Metrics, timed_call
from server.model_registry import ModelRegistry, ModelVersion
from server.models import ModelCatalog
from server.oip_tensors import (
    EXTENSIONS,
    PLATFORM,
    ModelShape,
    classification_output,
    probabilities_output,
    request_parameters,
    to_parameter,
    whole_number,
)
from server.serving import ModelServer
from tandem.inference import open_inference_pb2 as oip
from tandem.inference import open_inference_pb2_grpc

SERVER_NAME = "tandem"


def _server_version() -> str:
    try:
        return importlib.metadata.version("tandem")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "0+unknown"


class OpenInferenceServicer(open_inference_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        model_server: ModelServer,
        devices: DeviceRegistry,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._registry = registry
        self._server = model_server
        self._devices = devices
        self._metrics = metrics
        self._catalog = ModelCatalog()
        self._version = _server_version()

    @unary
    async def ServerLive(
        self, request: oip.ServerLiveRequest, context: Context
    ) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    @unary
    async def ServerReady(
        self, request: oip.ServerReadyRequest, context: Context
    ) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self._server.accepting)

    @unary
    async def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: Context
    ) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(
            name=SERVER_NAME, version=self._version, extensions=EXTENSIONS
        )

    @unary
    async def ModelReady(
        self, request: oip.ModelReadyRequest, context: Context
    ) -> oip.ModelReadyResponse:
        version = self._version_of(request.name, request.version, missing_ok=True)
        if version is None:
            return oip.ModelReadyResponse(ready=False)
        try:  # its file is there and a Tandem model (read off the event loop)
            await self._catalog.describe(version.path, version.task_id)
        except ServiceError:
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=True)

    @unary
    async def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context: Context
    ) -> oip.ModelMetadataResponse:
        version = self._version_of(request.name, request.version)
        shape = ModelShape(version.image_size, version.classes)
        described: dict[str, bool | int | float | str] = {
            "version": version.version,
            "architecture": version.architecture,
            "image_size": version.image_size,
            # Lists as JSON: a protocol parameter holds one scalar.
            "mean": json.dumps(list(version.mean)),
            "std": json.dumps(list(version.std)),
            "classes": json.dumps(list(version.classes)),
            "task_id": version.task_id,
        }
        return oip.ModelMetadataResponse(
            name=version.name,
            versions=[str(v.version) for v in self._registry.versions(version.name)],
            platform=PLATFORM,
            inputs=shape.inputs(),
            outputs=shape.outputs(),
            parameters={key: to_parameter(value) for key, value in described.items()},
        )

    @unary
    async def ModelInfer(
        self, request: oip.ModelInferRequest, context: Context
    ) -> oip.ModelInferResponse:
        histogram = None if self._metrics is None else self._metrics.model_infer_latency
        with timed_call(histogram):
            response = await self._infer(request, context)
        if self._metrics is not None:
            self._metrics.model_infer_images.inc(response.outputs[0].shape[0])
        return response

    async def _infer(
        self, request: oip.ModelInferRequest, context: Context
    ) -> oip.ModelInferResponse:
        version = self._version_of(request.model_name, request.model_version)
        model = await self._catalog.describe(version.path, version.task_id)
        shape = ModelShape(model.image_size, model.classes)
        try:
            images = shape.read_inputs(request)
            k = shape.classification(request)
            parameters = request_parameters(request.parameters)
            priority = whole_number(parameters.get("priority"), "parameter priority")
            timeout_us = whole_number(parameters.get("timeout"), "parameter timeout")
        except ValueError as exc:
            raise invalid_argument(str(exc)) from None
        device = parameters.get("device") or ""
        if not isinstance(device, str):
            raise invalid_argument(f"parameter device must be a string, got {device!r}")
        checked_priority = validation.check_priority(priority is not None, priority or 0)
        _, candidates = validation.check_device(device, self._devices.devices)
        remaining = _deadline(context.time_remaining(), timeout_us)
        try:
            answers, used = await asyncio.wait_for(
                self._server.answer(
                    model,
                    candidates,
                    images,
                    max(k, 1),
                    checked_priority,
                    probabilities=k == 0,
                ),
                remaining,
            )
        except TimeoutError:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the answer"
            ) from None
        if k:
            tensor, raw = classification_output([a.predictions for a in answers], k)
        else:
            tensor, raw = probabilities_output(
                [a.probabilities for a in answers], len(model.classes)
            )
        return oip.ModelInferResponse(
            model_name=version.name,
            model_version=str(version.version),
            id=request.id,
            parameters={"device": oip.InferParameter(string_param=used)},
            outputs=[tensor],
            raw_output_contents=[raw],
        )

    @overload
    def _version_of(self, name: str, version: str) -> ModelVersion: ...

    @overload
    def _version_of(
        self, name: str, version: str, *, missing_ok: Literal[True]
    ) -> ModelVersion | None: ...

    def _version_of(
        self, name: str, version: str, *, missing_ok: bool = False
    ) -> ModelVersion | None:
        """The registry version a (name, version) pair means: a version number, an alias,
        or the latest for an empty version. NOT_FOUND for an unknown one (None with
        `missing_ok`), INVALID_ARGUMENT for a malformed one."""
        name, version = name.strip(), version.strip()
        if not name:
            raise invalid_argument("the model name is required (a name in the model registry)")
        if not version:
            reference = name
        elif version.isascii() and version.isdigit():
            reference = f"{name}/{version}"
        else:
            reference = f"{name}@{version}"
        try:
            return self._registry.resolve(reference, field="model")
        except ServiceError as exc:
            if missing_ok and exc.code is grpc.StatusCode.NOT_FOUND:
                return None
            raise


def _deadline(remaining_s: float | None, timeout_us: int | None) -> float | None:
    """The sooner of the call's deadline and the request's `timeout` (microseconds)."""
    if timeout_us is None or timeout_us <= 0:
        return remaining_s
    timeout_s = timeout_us / 1_000_000
    return timeout_s if remaining_s is None else min(remaining_s, timeout_s)
