"""The gateway's only resource: one grpc.aio channel to the Tandem gRPC server, and typed
calls on it that carry the caller's credentials.

The gateway keeps no state of its own; everything it answers comes from these calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tandem.contract import EXPORT_TIMEOUT_S, MAX_EVENTS_PER_MESSAGE, MAX_MESSAGE_BYTES
from tandem.inference import open_inference_pb2_grpc
from tandem.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    resource_service_pb2,
    resource_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)

# As large as the server accepts, so an image the server would take is not refused here.
_CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A restarted server is found again within a couple of seconds, not minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Timeouts:
    """Deadlines of the gateway's gRPC calls, in seconds."""

    # Submits, reads, cancels, limits.
    unary_s: float = 30.0
    # Predict waits for an inference slot and a forward pass.
    predict_s: float = 60.0
    # Health checks answer at once or the server is not healthy.
    health_s: float = 5.0
    # An export runs for seconds to minutes, after waiting its turn.
    export_s: float = EXPORT_TIMEOUT_S


class Backend:
    """A lazily opened channel to `target` and the stubs of every Tandem service.

    The channel opens on first use, inside the event loop that serves requests (a grpc.aio
    channel belongs to the loop it was made in), and closes with the app."""

    def __init__(self, target: str, timeouts: Timeouts) -> None:
        self.target = target
        self.timeouts = timeouts
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}
        # Set when the gateway stops: open log streams end instead of holding shutdown.
        self.closing = asyncio.Event()

    def _stub(self, name: str, factory: Any) -> Any:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        stub = self._stubs.get(name)
        if stub is None:
            stub = self._stubs[name] = factory(self._channel)
        return stub

    @property
    def training(self) -> Any:
        return self._stub("training", training_service_pb2_grpc.TrainingServiceStub)

    @property
    def inference(self) -> Any:
        return self._stub("inference", inference_service_pb2_grpc.InferenceServiceStub)

    @property
    def tasks(self) -> Any:
        return self._stub("tasks", task_service_pb2_grpc.TaskServiceStub)

    @property
    def resources(self) -> Any:
        return self._stub("resources", resource_service_pb2_grpc.ResourceServiceStub)

    @property
    def models(self) -> Any:
        return self._stub("models", model_service_pb2_grpc.ModelServiceStub)

    @property
    def open_inference(self) -> Any:
        """The Open Inference Protocol's service (`routes_oip.py`)."""
        return self._stub("open_inference", open_inference_pb2_grpc.GRPCInferenceServiceStub)

    @property
    def health(self) -> Any:
        return self._stub("health", health_pb2_grpc.HealthStub)

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            self._stubs.clear()
            await channel.close()


@dataclass(frozen=True)
class Rpc:
    """The calls one HTTP request makes, each with that request's metadata."""

    backend: Backend
    metadata: Metadata

    def _opts(self, timeout: float | None) -> dict[str, Any]:
        return {"timeout": timeout, "metadata": self.metadata}

    async def train(self, request: training_service_pb2.TrainRequest) -> task_pb2.Task:
        response = await self.backend.training.Train(
            request, **self._opts(self.backend.timeouts.unary_s)
        )
        task: task_pb2.Task = response.task
        return task

    async def infer(self, request: inference_service_pb2.InferRequest) -> task_pb2.Task:
        response = await self.backend.inference.Infer(
            request, **self._opts(self.backend.timeouts.unary_s)
        )
        task: task_pb2.Task = response.task
        return task

    async def predict(
        self, request: inference_service_pb2.PredictRequest
    ) -> inference_service_pb2.PredictResponse:
        response: inference_service_pb2.PredictResponse = await self.backend.inference.Predict(
            request, **self._opts(self.backend.timeouts.predict_s)
        )
        return response

    async def get_task(self, task_id: str) -> task_pb2.Task:
        response = await self.backend.tasks.GetTask(
            task_service_pb2.GetTaskRequest(task_id=task_id),
            **self._opts(self.backend.timeouts.unary_s),
        )
        task: task_pb2.Task = response.task
        return task

    async def list_tasks(
        self, request: task_service_pb2.ListTasksRequest
    ) -> task_service_pb2.ListTasksResponse:
        response: task_service_pb2.ListTasksResponse = await self.backend.tasks.ListTasks(
            request, **self._opts(self.backend.timeouts.unary_s)
        )
        return response

    async def cancel_task(self, task_id: str) -> task_pb2.Task:
        response = await self.backend.tasks.CancelTask(
            task_service_pb2.CancelTaskRequest(task_id=task_id),
            **self._opts(self.backend.timeouts.unary_s),
        )
        task: task_pb2.Task = response.task
        return task

    def logs(self, task_id: str, from_seq: int, follow: bool) -> Any:
        """The Logs stream call (a grpc.aio stream to `read()`), events grouped in
        `LogsResponse.events`; no deadline, since a task may run for hours: the stream
        ends with the task, or when the client leaves."""
        request = task_service_pb2.LogsRequest(
            task_id=task_id,
            from_seq=from_seq,
            follow=follow,
            max_events_per_message=MAX_EVENTS_PER_MESSAGE,
        )
        return self.backend.tasks.Logs(request, **self._opts(None))

    async def get_resources(self) -> resource_service_pb2.GetResourcesResponse:
        response: resource_service_pb2.GetResourcesResponse = (
            await self.backend.resources.GetResources(
                resource_service_pb2.GetResourcesRequest(),
                **self._opts(self.backend.timeouts.unary_s),
            )
        )
        return response

    async def update_limits(
        self, request: resource_service_pb2.UpdateLimitsRequest
    ) -> resource_service_pb2.UpdateLimitsResponse:
        response: resource_service_pb2.UpdateLimitsResponse = (
            await self.backend.resources.UpdateLimits(
                request, **self._opts(self.backend.timeouts.unary_s)
            )
        )
        return response

    async def export_model(
        self, request: model_service_pb2.ExportModelRequest
    ) -> model_service_pb2.ExportModelResponse:
        response: model_service_pb2.ExportModelResponse = await self.backend.models.ExportModel(
            request, **self._opts(self.backend.timeouts.export_s)
        )
        return response

    async def list_models(self) -> model_service_pb2.ListModelsResponse:
        response: model_service_pb2.ListModelsResponse = await self.backend.models.ListModels(
            model_service_pb2.ListModelsRequest(), **self._opts(self.backend.timeouts.unary_s)
        )
        return response

    async def get_model(self, name: str) -> model_service_pb2.GetModelResponse:
        response: model_service_pb2.GetModelResponse = await self.backend.models.GetModel(
            model_service_pb2.GetModelRequest(name=name),
            **self._opts(self.backend.timeouts.unary_s),
        )
        return response

    async def set_model_alias(
        self, request: model_service_pb2.SetModelAliasRequest
    ) -> model_service_pb2.SetModelAliasResponse:
        response: model_service_pb2.SetModelAliasResponse = await self.backend.models.SetModelAlias(
            request, **self._opts(self.backend.timeouts.unary_s)
        )
        return response

    async def delete_model_alias(
        self, request: model_service_pb2.DeleteModelAliasRequest
    ) -> model_service_pb2.DeleteModelAliasResponse:
        response: model_service_pb2.DeleteModelAliasResponse = (
            await self.backend.models.DeleteModelAlias(
                request, **self._opts(self.backend.timeouts.unary_s)
            )
        )
        return response

    async def delete_model_version(
        self, request: model_service_pb2.DeleteModelVersionRequest
    ) -> model_service_pb2.DeleteModelVersionResponse:
        response: model_service_pb2.DeleteModelVersionResponse = (
            await self.backend.models.DeleteModelVersion(
                request, **self._opts(self.backend.timeouts.unary_s)
            )
        )
        return response

    async def health(self) -> str:
        """The overall serving status's name, for example `SERVING`."""
        response = await self.backend.health.Check(
            health_pb2.HealthCheckRequest(service=""),
            **self._opts(self.backend.timeouts.health_s),
        )
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name
