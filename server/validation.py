"""Checks submit requests and fills in defaults, so a task that is accepted can run.

Every problem is a `ServiceError` naming the field and the allowed values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from engines import catalogue
from engines.folders import validate_image_folder, validate_inference_folder
from scheduler.devices import DeviceError, DeviceUnavailable, resolve_among
from server.errors import failed_precondition, invalid_argument
from server.models import ModelInfo
from server.paths import SYNTHETIC, resolve_under_roots
from tandem import contract
from tandem.contract import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_INFER_BATCH_SIZE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PRIORITY,
    DEFAULT_SEED,
    DEFAULT_TOP_K,
    DEFAULT_VAL_SPLIT,
    OutOfRange,
)
from tandem.v1 import inference_service_pb2, training_service_pb2

T = TypeVar("T")


@dataclass(frozen=True)
class Submission:
    """A validated submit: what to store and how to queue it."""

    params: dict[str, Any]
    priority: int
    # The device as asked for, and the concrete devices it may run on.
    device: str
    candidates: tuple[str, ...]
    request_id: str


def _checked(check: Callable[[T], T], value: T) -> T:
    """`check(value)`, its sentence (the one REST callers get too) sent as INVALID_ARGUMENT."""
    try:
        return check(value)
    except OutOfRange as exc:
        raise invalid_argument(str(exc)) from None


def check_priority(has: bool, value: int) -> int:
    return _checked(contract.check_priority, value) if has else DEFAULT_PRIORITY


def check_device(device: str, devices: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """The device as asked for and its concrete candidates among `devices`, the
    arbiter's (this machine's, or a Ray cluster's nodes')."""
    requested = device.strip().lower() or DEFAULT_DEVICE
    try:
        return requested, resolve_among(requested, devices)
    except DeviceUnavailable as exc:
        raise failed_precondition(str(exc)) from None
    except DeviceError as exc:
        raise invalid_argument(str(exc)) from None


def check_request_id(request_id: str) -> str:
    return _checked(contract.check_request_id, request_id)


def check_model(name: str) -> str:
    if not name:
        raise invalid_argument(
            "model is required: a torchvision classification model such as "
            "resnet18 or mobilenet_v3_small"
        )
    if name not in catalogue.classification_models():
        hints = catalogue.suggest(name) or ["resnet18", "mobilenet_v3_small", "efficientnet_b0"]
        raise invalid_argument(
            f"unknown model {name!r}; valid models include {', '.join(hints)} "
            "(any torchvision classification model)"
        )
    return name


def check_dataset(spec: str, roots: Sequence[Path]) -> str:
    if spec == SYNTHETIC:
        return spec
    path = resolve_under_roots(spec, roots, what="dataset")
    if not path.is_dir():
        raise invalid_argument(f"dataset {spec!r} is not a directory")
    problem = validate_image_folder(str(path))
    if problem:
        raise invalid_argument(f"dataset {spec!r} is not a usable ImageFolder: {problem}")
    return str(path)


# PNG and JPEG signatures: the only image formats Predict accepts.
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def check_inference_dataset(spec: str, roots: Sequence[Path]) -> str:
    if not spec:
        raise invalid_argument(
            "dataset is required: an ImageFolder, a folder of images, or 'synthetic'"
        )
    if spec == SYNTHETIC:
        return spec
    path = resolve_under_roots(spec, roots, what="dataset")
    if not path.is_dir():
        raise invalid_argument(f"dataset {spec!r} is not a directory")
    problem = validate_inference_folder(str(path))
    if problem:
        raise invalid_argument(f"dataset {spec!r} cannot be used: {problem}")
    return str(path)


def check_top_k(has: bool, value: int, classes: int) -> int:
    if not has:
        return min(DEFAULT_TOP_K, classes)
    return min(_checked(contract.check_top_k, value), classes)


def inference(
    request: inference_service_pb2.InferRequest,
    model: ModelInfo,
    *,
    roots: Sequence[Path],
    devices: Sequence[str],
) -> Submission:
    """Validates an InferRequest whose model has already been resolved and read."""
    priority = check_priority(request.HasField("priority"), request.priority)
    batch_size = (
        _checked(contract.check_batch_size, request.batch_size)
        if request.HasField("batch_size")
        else DEFAULT_INFER_BATCH_SIZE
    )
    top_k = check_top_k(request.HasField("top_k"), request.top_k, len(model.classes))
    request_id = check_request_id(request.request_id)
    device, candidates = check_device(request.device, devices)
    dataset = check_inference_dataset(request.dataset.strip(), roots)
    return Submission(
        params={
            "task_id": model.task_id,
            "model_path": model.path,
            "dataset": dataset,
            "batch_size": batch_size,
            "top_k": top_k,
            "model": model.architecture,
            "image_size": model.image_size,
        },
        priority=priority,
        device=device,
        candidates=candidates,
        request_id=request_id,
    )


def check_image(data: bytes) -> bytes:
    if not data:
        raise invalid_argument("image is required: the bytes of a PNG or JPEG file")
    if not data.startswith(_IMAGE_MAGIC):
        raise invalid_argument("image is not a PNG or JPEG file")
    return data


def training(
    request: training_service_pb2.TrainRequest, *, roots: Sequence[Path], devices: Sequence[str]
) -> Submission:
    """Validates a TrainRequest; the order of checks puts cheap, common mistakes first."""
    model = check_model(request.model.strip())
    priority = check_priority(request.HasField("priority"), request.priority)
    epochs = (
        _checked(contract.check_epochs, request.epochs)
        if request.HasField("epochs")
        else DEFAULT_EPOCHS
    )
    batch_size = (
        _checked(contract.check_batch_size, request.batch_size)
        if request.HasField("batch_size")
        else DEFAULT_BATCH_SIZE
    )
    image_size = (
        _checked(contract.check_image_size, request.image_size)
        if request.HasField("image_size")
        else DEFAULT_IMAGE_SIZE
    )
    learning_rate = (
        _checked(contract.check_learning_rate, request.learning_rate)
        if request.HasField("learning_rate")
        else DEFAULT_LEARNING_RATE
    )
    optimizer = _checked(contract.check_optimizer, request.optimizer)
    val_split = (
        _checked(contract.check_val_split, request.val_split)
        if request.HasField("val_split")
        else DEFAULT_VAL_SPLIT
    )
    size_problem = catalogue.validate_model(model, image_size)
    if size_problem:
        raise invalid_argument(size_problem)
    seed = request.seed if request.HasField("seed") else DEFAULT_SEED
    request_id = check_request_id(request.request_id)
    device, candidates = check_device(request.device, devices)
    dataset = check_dataset(request.dataset.strip(), roots) if request.dataset.strip() else ""
    if not dataset:
        raise invalid_argument(
            "dataset is required: a path to an ImageFolder directory, or 'synthetic'"
        )
    return Submission(
        params={
            "model": model,
            "dataset": dataset,
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "optimizer": optimizer,
            "image_size": image_size,
            "seed": seed,
            "val_split": val_split,
            "preemptible": request.preemptible if request.HasField("preemptible") else True,
        },
        priority=priority,
        device=device,
        candidates=candidates,
        request_id=request_id,
    )
