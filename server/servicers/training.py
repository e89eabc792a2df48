"""`tandem.v1.TrainingService`: accepts training tasks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from server import validation
from server.convert import task_to_pb
from server.errors import Context, unary
from server.manager import TaskManager
from server.model_registry import ModelRegistry
from server.models import ModelCatalog, init_source
from server.records import TaskKind
from tandem.v1 import training_service_pb2, training_service_pb2_grpc


class TrainingServicer(training_service_pb2_grpc.TrainingServiceServicer):
    def __init__(
        self,
        manager: TaskManager,
        registry: ModelRegistry,
        *,
        dataset_roots: Sequence[Path],
        model_roots: Sequence[Path],
    ) -> None:
        self._manager = manager
        self._registry = registry
        self._dataset_roots = dataset_roots
        self._model_roots = model_roots
        self._catalog = ModelCatalog()

    @unary
    async def Train(
        self, request: training_service_pb2.TrainRequest, context: Context
    ) -> training_service_pb2.TrainResponse:
        init_model = None
        init_reference = ""
        validation.check_weights_sources(request)
        if request.init_from.strip():
            source = init_source(
                request.init_from,
                get_task=self._manager.get,
                roots=self._model_roots,
                registry=self._registry,
            )
            init_model = await self._catalog.describe(source.path, source.task_id)
            init_reference = source.reference
        submission = validation.training(
            request,
            roots=self._dataset_roots,
            devices=self._manager.devices,
            model_roots=self._model_roots,
            init_model=init_model,
            init_reference=init_reference,
        )
        task = self._manager.submit(TaskKind.TRAINING, submission)
        return training_service_pb2.TrainResponse(task=task_to_pb(task))
