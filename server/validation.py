"""Checks submit requests and fills in defaults, so a task that is accepted can run.

Every problem is a `ServiceError` naming the field and the allowed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines import zoo
from engines.datasets import validate_image_folder, validate_inference_folder
from scheduler import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY
from scheduler.devices import DeviceError, DeviceUnavailable, resolve_among
from server.errors import failed_precondition, invalid_argument
from server.models import ModelInfo
from server.paths import SYNTHETIC, resolve_under_roots
from tandem.v1 import inference_service_pb2, training_service_pb2

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
DEFAULT_DEVICE = "auto"
MAX_REQUEST_ID = 128

# Training defaults, in TrainRequest's documentation too.
DEFAULT_EPOCHS = 1
DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_OPTIMIZER = "adam"
DEFAULT_IMAGE_SIZE = 224
DEFAULT_VAL_SPLIT = 0.2
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024


@dataclass(frozen=True)
class Submission:
    """A validated submit: what to store and how to queue it."""

    params: dict[str, Any]
    priority: int
    # The device as asked for, and the concrete devices it may run on.
    device: str
    candidates: tuple[str, ...]
    request_id: str


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise invalid_argument(f"{name} must be between {low:g} and {high:g}, got {value:g}")


def _positive(name: str, value: int, high: int) -> int:
    if value < 1:
        raise invalid_argument(f"{name} must be a positive integer, got {value}")
    if value > high:
        raise invalid_argument(f"{name} must be at most {high}, got {value}")
    return value


def check_priority(has: bool, value: int) -> int:
    if not has:
        return DEFAULT_PRIORITY
    _in_range("priority", value, MIN_PRIORITY, MAX_PRIORITY)
    return value


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
    if len(request_id) > MAX_REQUEST_ID:
        raise invalid_argument(f"request_id must be at most {MAX_REQUEST_ID} characters")
    return request_id


def check_model(name: str) -> str:
    if not name:
        raise invalid_argument(
            "model is required: a torchvision classification model such as "
            "resnet18 or mobilenet_v3_small"
        )
    if name not in zoo.classification_models():
        hints = zoo.suggest(name) or ["resnet18", "mobilenet_v3_small", "efficientnet_b0"]
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


DEFAULT_INFER_BATCH_SIZE = 64
DEFAULT_TOP_K = 5
MAX_TOP_K = 1000
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
    _positive("top_k", value, MAX_TOP_K)
    return min(value, classes)


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
        _positive("batch_size", request.batch_size, 65_536)
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
        _positive("epochs", request.epochs, 10_000)
        if request.HasField("epochs")
        else (DEFAULT_EPOCHS)
    )
    batch_size = (
        _positive("batch_size", request.batch_size, 65_536)
        if request.HasField("batch_size")
        else DEFAULT_BATCH_SIZE
    )
    image_size = DEFAULT_IMAGE_SIZE
    if request.HasField("image_size"):
        _positive("image_size", request.image_size, MAX_IMAGE_SIZE)
        _in_range("image_size", request.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        image_size = request.image_size
    learning_rate = DEFAULT_LEARNING_RATE
    if request.HasField("learning_rate"):
        learning_rate = request.learning_rate
        if not 0 < learning_rate <= 10:
            raise invalid_argument(
                f"learning_rate must be greater than 0 and at most 10, got {learning_rate:g}"
            )
    optimizer = request.optimizer.strip().lower() or DEFAULT_OPTIMIZER
    if optimizer not in OPTIMIZERS:
        raise invalid_argument(
            f"unknown optimizer {request.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
        )
    val_split = DEFAULT_VAL_SPLIT
    if request.HasField("val_split"):
        val_split = request.val_split
        _in_range("val_split", val_split, 0.0, 0.9)
    size_problem = zoo.validate_model(model, image_size)
    if size_problem:
        raise invalid_argument(size_problem)
    seed = request.seed if request.HasField("seed") else 0
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
        },
        priority=priority,
        device=device,
        candidates=candidates,
        request_id=request_id,
    )
