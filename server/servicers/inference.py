"""`tandem.v1.InferenceService`: batch inference tasks and online predictions."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import grpc

from server import validation
from server.convert import task_to_pb
from server.errors import Context, ServiceError, unary
from server.manager import TaskManager
from server.metrics import Metrics, timed_call
from server.model_registry import ModelRegistry
from server.models import ModelCatalog, ModelSource, model_file, requested_model
from server.records import TaskKind
from server.serving import ModelServer
from tandem.v1 import inference_service_pb2, inference_service_pb2_grpc


class InferenceServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        manager: TaskManager,
        model_server: ModelServer,
        registry: ModelRegistry,
        *,
        dataset_roots: Sequence[Path],
        model_roots: Sequence[Path],
        metrics: Metrics | None = None,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._server = model_server
        self._registry = registry
        self._catalog = ModelCatalog()
        self._dataset_roots = dataset_roots
        self._model_roots = model_roots
        # Predict's hot path: which file a (task_id, model_path) pair means does not
        # change once resolved (a SUCCEEDED task's model is final), so remember it.
        # `describe` still stats the file on every call and notices it is gone.
        self._resolved: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()

    def _model_file(self, task_id: str, model_path: str, model_name: str) -> ModelSource:
        if model_name.strip() or bool(task_id.strip()) == bool(model_path.strip()):
            # A reference means another version once one is published or an alias moves,
            # so it is never remembered (and a request naming no model or two is refused).
            return self._requested(task_id, model_path, model_name)
        key = (task_id, model_path)
        found = self._resolved.get(key)
        if found is None:
            found = model_file(
                task_id, model_path, get_task=self._manager.get, roots=self._model_roots
            )
            self._resolved[key] = found
            if len(self._resolved) > 256:
                self._resolved.popitem(last=False)
        return ModelSource(*found)

    def _requested(self, task_id: str, model_path: str, model_name: str) -> ModelSource:
        return requested_model(
            task_id,
            model_path,
            model_name,
            get_task=self._manager.get,
            roots=self._model_roots,
            registry=self._registry,
        )

    @unary
    async def Infer(
        self, request: inference_service_pb2.InferRequest, context: Context
    ) -> inference_service_pb2.InferResponse:
        source = self._requested(request.task_id, request.model_path, request.model_name)
        model = await self._catalog.describe(source.path, source.task_id)
        submission = validation.inference(
            request,
            model,
            roots=self._dataset_roots,
            devices=self._manager.devices,
            reference=source.reference,
        )
        task = self._manager.submit(TaskKind.INFERENCE, submission)
        return inference_service_pb2.InferResponse(task=task_to_pb(task))

    @unary
    async def Predict(
        self, request: inference_service_pb2.PredictRequest, context: Context
    ) -> inference_service_pb2.PredictResponse:
        histogram = None if self._metrics is None else self._metrics.predict_latency
        with timed_call(histogram):
            return await self._predict(request, context)

    async def _predict(
        self, request: inference_service_pb2.PredictRequest, context: Context
    ) -> inference_service_pb2.PredictResponse:
        image = validation.check_image(request.image)
        priority = validation.check_priority(request.HasField("priority"), request.priority)
        _, candidates = validation.check_device(request.device, self._manager.devices)
        source = self._model_file(request.task_id, request.model_path, request.model_name)
        model = await self._catalog.describe(source.path, source.task_id)
        top_k = validation.check_top_k(request.HasField("top_k"), request.top_k, len(model.classes))
        # Never a late answer: stop waiting when the caller's deadline passes.
        remaining = context.time_remaining()
        try:
            predictions, device = await asyncio.wait_for(
                self._server.predict(model, candidates, image, top_k, priority), remaining
            )
        except TimeoutError:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the answer"
            ) from None
        return inference_service_pb2.PredictResponse(
            predictions=[
                inference_service_pb2.Prediction(label=p.label, score=p.score, index=p.index)
                for p in predictions
            ],
            device=device,
            model_name=source.reference,
        )
