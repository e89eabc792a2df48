"""`tandem.v1.TrainingService`: accepts training tasks."""

from __future__ import annotations

from typing import Any

from server import validation
from server.convert import task_to_pb
from server.errors import Context, unary
from server.manager import TaskManager
from server.records import TaskKind
from tandem.v1 import training_service_pb2, training_service_pb2_grpc


class TrainingServicer(training_service_pb2_grpc.TrainingServiceServicer):
    def __init__(self, manager: TaskManager, *, roots: Any) -> None:
        self._manager = manager
        self._roots = roots

    @unary
    async def Train(
        self, request: training_service_pb2.TrainRequest, context: Context
    ) -> training_service_pb2.TrainResponse:
        submission = validation.training(request, roots=self._roots, devices=self._manager.devices)
        task = self._manager.submit(TaskKind.TRAINING, submission)
        return training_service_pb2.TrainResponse(task=task_to_pb(task))
