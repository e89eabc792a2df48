"""`tandem.v1.ModelService`: the model registry (names, versions, aliases) and export."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from server.convert import model_to_pb, model_version_to_pb
from server.errors import Context, invalid_argument, unary
from server.exports import Exporter, export_path
from server.manager import TaskManager
from server.model_registry import ModelRegistry
from server.models import ModelCatalog, requested_model
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
        registry: ModelRegistry,
        exporter: Exporter,
        *,
        model_roots: Sequence[Path],
        data_dir: Path,
        task_dir: Callable[[str], Path],
    ) -> None:
        self._manager = manager
        self._registry = registry
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
        source = requested_model(
            request.task_id,
            request.model_path,
            request.model_name,
            get_task=self._manager.get,
            roots=self._model_roots,
            registry=self._registry,
        )
        path, task_id = source.path, source.task_id
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
            model_name=source.reference,
        )

    # -- the registry --------------------------------------------------------------------

    @unary
    async def ListModels(
        self, request: model_service_pb2.ListModelsRequest, context: Context
    ) -> model_service_pb2.ListModelsResponse:
        registry = self._registry
        return model_service_pb2.ListModelsResponse(
            models=[
                model_to_pb(registry.versions(n), registry.aliases(n), every_version=False)
                for n in registry.names()
            ]
        )

    @unary
    async def GetModel(
        self, request: model_service_pb2.GetModelRequest, context: Context
    ) -> model_service_pb2.GetModelResponse:
        name = _required(request.name, "name")
        model = model_to_pb(
            self._registry.versions(name), self._registry.aliases(name), every_version=True
        )
        return model_service_pb2.GetModelResponse(model=model)

    @unary
    async def SetModelAlias(
        self, request: model_service_pb2.SetModelAliasRequest, context: Context
    ) -> model_service_pb2.SetModelAliasResponse:
        version, previous = self._registry.set_alias(
            _required(request.name, "name"), _required(request.alias, "alias"), request.version
        )
        return model_service_pb2.SetModelAliasResponse(
            version=model_version_to_pb(version), previous_version=previous
        )

    @unary
    async def DeleteModelAlias(
        self, request: model_service_pb2.DeleteModelAliasRequest, context: Context
    ) -> model_service_pb2.DeleteModelAliasResponse:
        version = self._registry.delete_alias(
            _required(request.name, "name"), _required(request.alias, "alias")
        )
        return model_service_pb2.DeleteModelAliasResponse(version=version)

    @unary
    async def DeleteModelVersion(
        self, request: model_service_pb2.DeleteModelVersionRequest, context: Context
    ) -> model_service_pb2.DeleteModelVersionResponse:
        deleted = self._registry.delete_version(_required(request.name, "name"), request.version)
        return model_service_pb2.DeleteModelVersionResponse(version=model_version_to_pb(deleted))


def _required(value: str, field: str) -> str:
    if not value.strip():
        raise invalid_argument(f"{field} is required")
    return value.strip()
