"""`tandem.v1.ModelService`: trained models as files (export; the registry joins later)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from server.errors import Context, invalid_argument, unary
from server.exports import Exporter, export_path
from server.manager import TaskManager
from server.models import ModelCatalog, model_file
from tandem.contract import EXPORT_FORMATS
from tandem.v1 import model_pb2, model_service_pb2, model_service_pb2_grpc

# `ExportFormat` numbers by the names engines.export, REST and the CLI use.
_FORMATS: dict[int, str] = {
    model_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{name.upper()}"): name for name in EXPORT_FORMATS
}
_FORMAT_NAMES = " or ".join(model_pb2.ExportFormat.Name(number) for number in _FORMATS)


def export_format(number: int) -> str:
    """The format's name; INVALID_ARGUMENT for UNSPECIFIED or a number this server lacks."""
    if number == model_pb2.EXPORT_FORMAT_UNSPECIFIED:
        raise invalid_argument(f"format is required: {_FORMAT_NAMES}")
    name = _FORMATS.get(number)
    if name is None:
        raise invalid_argument(f"format {number} is not one this server knows: {_FORMAT_NAMES}")
    return name


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self,
        manager: TaskManager,
        exporter: Exporter,
        *,
        model_roots: Sequence[Path],
        data_dir: Path,
        task_dir: Callable[[str], Path],
    ) -> None:
        self._manager = manager
        self._exporter = exporter
        self._catalog = ModelCatalog()
        self._model_roots = model_roots
        self._data_dir = data_dir
        self._task_dir = task_dir

    @unary
    async def ExportModel(
        self, request: model_service_pb2.ExportModelRequest, context: Context
    ) -> model_service_pb2.ExportModelResponse:
        fmt = export_format(request.format)
        path, task_id = model_file(
            request.task_id,
            request.model_path,
            get_task=self._manager.get,
            roots=self._model_roots,
        )
        # A damaged or foreign file is refused here, without torch, as Infer and Predict
        # refuse it (INVALID_ARGUMENT), before a process is started for it.
        await self._catalog.describe(path, task_id)
        task_dir = self._task_dir(task_id) if task_id else None
        output = export_path(fmt, path, task_dir, data_dir=self._data_dir)
        exported = await self._exporter.export(path, fmt, output)
        return model_service_pb2.ExportModelResponse(
            path=exported.path,
            size_bytes=exported.size_bytes,
            format=request.format,
            max_abs_diff=exported.max_abs_diff,
            opset=exported.opset,
            model_path=path,
            task_id=task_id,
            export_seconds=exported.seconds,
        )
