"""Which model file a request means, and what is in it.

Infer, Predict and ExportModel name a model by the `task_id` of a SUCCEEDED training
task, by a `model_path` inside the model roots, or by a `model_name` reference in the
model registry; `init_from` by any of the three in one string. The artifact's
description (architecture, classes, image size) is read once per file version, without
torch and without its weights, by `engines.artifact_info` (a model file can never run
code); a worker loads the weights.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from engines.artifact_info import ArtifactError, read_info
from server.errors import ServiceError, failed_precondition, invalid_argument, not_found
from server.paths import MODEL_ROOTS_HINT, resolve_under_roots
from server.records import TaskKind, TaskRecord, TaskState
from tandem.contract import REFERENCE_FORM, OutOfRange, parse_model_reference

if TYPE_CHECKING:
    from server.model_registry import ModelRegistry


@dataclass(frozen=True)
class ModelInfo:
    """What Infer and Predict need to know about a model file before running it."""

    path: str
    # The training task it came from; empty when given by path.
    task_id: str
    architecture: str
    classes: tuple[str, ...]
    image_size: int


@dataclass(frozen=True)
class ModelSource:
    """The model file a request means, and how it was named."""

    path: str
    # The training task it came from; empty when given by path.
    task_id: str
    # `name/version` when it was named through the registry; else empty.
    reference: str = ""


def requested_model(
    task_id: str,
    model_path: str,
    model_name: str,
    *,
    get_task: Callable[[str], TaskRecord],
    roots: Sequence[Path],
    registry: ModelRegistry,
) -> ModelSource:
    """The model of a request's `task_id`, `model_path` and `model_name` (exactly one)."""
    given = [
        field
        for field, value in (
            ("task_id", task_id),
            ("model_path", model_path),
            ("model_name", model_name),
        )
        if value.strip()
    ]
    if len(given) != 1:
        raise invalid_argument(
            "give exactly one of task_id (a SUCCEEDED training task), model_path (a model "
            f"file) and model_name (a registry reference: {REFERENCE_FORM})"
            + (f", not {' and '.join(given)}" if given else "")
        )
    if model_name.strip():
        version = registry.resolve(model_name)
        return ModelSource(version.path, version.task_id, version.reference)
    path, source_task = model_file(task_id, model_path, get_task=get_task, roots=roots)
    return ModelSource(path, source_task)


def model_file(
    task_id: str,
    model_path: str,
    *,
    get_task: Callable[[str], TaskRecord],
    roots: Sequence[Path],
) -> tuple[str, str]:
    """(path of the model file, source task id) for a request's model fields."""
    task_id, model_path = task_id.strip(), model_path.strip()
    if bool(task_id) == bool(model_path):
        raise invalid_argument(
            "give exactly one of task_id (a SUCCEEDED training task) and model_path"
        )
    if task_id:
        task = get_task(task_id)  # NOT_FOUND if there is no such task
        if task.kind is not TaskKind.TRAINING:
            raise failed_precondition(
                f"task {task_id} is a {task.kind.value} task; only a training task has a model"
            )
        if task.state is not TaskState.SUCCEEDED or not task.model_path:
            raise failed_precondition(
                f"task {task_id} is {task.state.value}; its model can be used once it has SUCCEEDED"
            )
        return task.model_path, task_id
    path = resolve_under_roots(model_path, roots, what="model_path", hint=MODEL_ROOTS_HINT)
    if not path.is_file():
        raise invalid_argument(f"model_path {model_path!r} is not a file")
    return str(path), ""


def init_source(
    reference: str,
    *,
    get_task: Callable[[str], TaskRecord],
    roots: Sequence[Path],
    registry: ModelRegistry,
) -> ModelSource:
    """The model of `TrainRequest.init_from`: a registry reference whose name the
    registry holds, else a training task's id (no folder and no model file suffix),
    else a path."""
    reference = reference.strip()
    try:
        parsed = parse_model_reference(reference, "init_from")
    except OutOfRange:
        parsed = None
    if parsed is not None and registry.has(parsed.name):
        version = registry.resolve(parsed, "init_from")
        return ModelSource(version.path, version.task_id, version.reference)
    if "/" in reference or reference.endswith(_MODEL_SUFFIXES):
        return ModelSource(*model_file("", reference, get_task=get_task, roots=roots))
    try:
        return ModelSource(*model_file(reference, "", get_task=get_task, roots=roots))
    except ServiceError as exc:
        if exc.code is not grpc.StatusCode.NOT_FOUND or parsed is None:
            raise
        raise not_found(
            f"init_from {reference!r} is neither a model in the registry nor a task"
        ) from None


_MODEL_SUFFIXES = (".pt", ".pth")


class ModelCatalog:
    """Reads artifacts' descriptions off the event loop, caching them per file version."""

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._cache: OrderedDict[tuple[str, int, int], ModelInfo] = OrderedDict()

    async def describe(self, path: str, task_id: str) -> ModelInfo:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise failed_precondition(f"model file {path} cannot be read: {exc.strerror}") from None
        key = (path, stat.st_mtime_ns, stat.st_size)
        info = self._cache.get(key)
        if info is None:
            info = await asyncio.to_thread(_read, path, task_id)
            self._cache[key] = info
            if len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        if info.task_id != task_id:
            info = ModelInfo(info.path, task_id, info.architecture, info.classes, info.image_size)
        return info


def _read(path: str, task_id: str) -> ModelInfo:
    try:
        artifact = read_info(path)
    except ArtifactError as exc:
        raise invalid_argument(f"model file {path} is not a usable Tandem model: {exc}") from None
    return ModelInfo(
        path=path,
        task_id=task_id,
        architecture=artifact.architecture,
        classes=tuple(artifact.classes),
        image_size=artifact.image_size,
    )
