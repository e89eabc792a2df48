"""Which model file a request means, and what is in it.

Infer and Predict name a model by the `task_id` of a SUCCEEDED training task or by a
`model_path` inside the model roots. The artifact's description (architecture, classes,
image size) is read once per file version, without torch and without its weights, by
`engines.artifact_info` (a model file can never run code); a worker loads the weights.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.artifact_info import ArtifactError, read_info
from server.errors import failed_precondition, invalid_argument
from server.paths import MODEL_ROOTS_HINT, resolve_under_roots
from server.records import TaskKind, TaskRecord, TaskState


@dataclass(frozen=True)
class ModelInfo:
    """What Infer and Predict need to know about a model file before running it."""

    path: str
    # The training task it came from; empty when given by path.
    task_id: str
    architecture: str
    classes: tuple[str, ...]
    image_size: int


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
    reference: str, *, get_task: Callable[[str], TaskRecord], roots: Sequence[Path]
) -> tuple[str, str]:
    """(path of the model file, source task id) for `TrainRequest.init_from`: a path
    (it has a folder or a model file's suffix) or else a training task's id."""
    reference = reference.strip()
    if "/" in reference or reference.endswith(_MODEL_SUFFIXES):
        return model_file("", reference, get_task=get_task, roots=roots)
    return model_file(reference, "", get_task=get_task, roots=roots)


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
