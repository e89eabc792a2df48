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
from engines.pretrained import UnknownWeights, missing_file_problem
from engines.pretrained import resolve as resolve_pretrained
from scheduler.devices import DeviceError, DeviceUnavailable, resolve_among
from server.errors import checked, failed_precondition, invalid_argument
from server.models import ModelInfo
from server.paths import MODEL_ROOTS_HINT, SYNTHETIC, resolve_under_roots
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


def check_priority(has: bool, value: int) -> int:
    return checked(contract.check_priority, value) if has else DEFAULT_PRIORITY


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
    return checked(contract.check_request_id, request_id)


def check_model(name: str) -> str:
    if not name:
        raise invalid_argument(contract.MODEL_REQUIRED)
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
    return min(checked(contract.check_top_k, value), classes)


def inference(
    request: inference_service_pb2.InferRequest,
    model: ModelInfo,
    *,
    roots: Sequence[Path],
    devices: Sequence[str],
    reference: str = "",
) -> Submission:
    """Validates an InferRequest whose model has already been resolved and read
    (`reference`: its registry version, `name/3`, when it was named by one)."""
    priority = check_priority(request.HasField("priority"), request.priority)
    batch_size = (
        checked(contract.check_batch_size, request.batch_size)
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
            **({"model_name": reference} if reference else {}),
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


def _optional(has: bool, check: Callable[[T], T], value: T, default: T) -> T:
    return checked(check, value) if has else default


def training(
    request: training_service_pb2.TrainRequest,
    *,
    roots: Sequence[Path],
    devices: Sequence[str],
    model_roots: Sequence[Path] = (),
    init_model: ModelInfo | None = None,
    init_reference: str = "",
) -> Submission:
    """Validates a TrainRequest; the order of checks puts cheap, common mistakes first.

    `init_model` is the model `init_from` names, already resolved and read (its
    architecture and image size are the defaults of `model` and `image_size`);
    `init_reference` its registry version (`name/3`) when it was named by one."""
    model = _training_model(request.model.strip(), init_model)
    priority = check_priority(request.HasField("priority"), request.priority)
    epochs = _optional(
        request.HasField("epochs"), contract.check_epochs, request.epochs, DEFAULT_EPOCHS
    )
    batch_size = _optional(
        request.HasField("batch_size"),
        contract.check_batch_size,
        request.batch_size,
        DEFAULT_BATCH_SIZE,
    )
    image_size = _optional(
        request.HasField("image_size"),
        contract.check_image_size,
        request.image_size,
        init_model.image_size if init_model is not None else DEFAULT_IMAGE_SIZE,
    )
    learning_rate = _optional(
        request.HasField("learning_rate"),
        contract.check_learning_rate,
        request.learning_rate,
        DEFAULT_LEARNING_RATE,
    )
    optimizer = checked(contract.check_optimizer, request.optimizer)
    val_split = _optional(
        request.HasField("val_split"),
        contract.check_val_split,
        request.val_split,
        DEFAULT_VAL_SPLIT,
    )
    size_problem = catalogue.validate_model(model, image_size)
    if size_problem:
        raise invalid_argument(size_problem)
    check_weights_sources(request)
    has_weights = any(
        field.strip() for field in (request.init_from, request.pretrained, request.weights_path)
    )
    recipe = _recipe(
        request, epochs=epochs, optimizer=optimizer, val_split=val_split, has_weights=has_weights
    )
    weights = _initial_weights(request, model, init_model, model_roots, init_reference)
    model_name = request.model_name.strip()
    if model_name:
        checked(contract.check_model_name, model_name)
    seed = request.seed if request.HasField("seed") else DEFAULT_SEED
    request_id = check_request_id(request.request_id)
    device, candidates = check_device(request.device, devices)
    dataset = check_dataset(request.dataset.strip(), roots) if request.dataset.strip() else ""
    if not dataset:
        raise invalid_argument(
            "dataset is required: a path to an ImageFolder directory, or 'synthetic'"
        )
    params: dict[str, Any] = {
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
        **recipe,
    }
    if weights is not None:
        params.update(weights)
    if model_name:
        params["model_name"] = model_name
    return Submission(
        params=params,
        priority=priority,
        device=device,
        candidates=candidates,
        request_id=request_id,
    )


def check_weights_sources(request: training_service_pb2.TrainRequest) -> None:
    """At most one of `init_from`, `pretrained` and `weights_path`; checked before
    `init_from` is looked up."""
    try:
        contract.check_weights_sources(request.init_from, request.pretrained, request.weights_path)
    except OutOfRange as exc:
        raise invalid_argument(str(exc)) from None


def _training_model(name: str, init_model: ModelInfo | None) -> str:
    if init_model is None:
        return check_model(name)
    if name and name != init_model.architecture:
        raise invalid_argument(
            f"init_from is a {init_model.architecture} model, but model asks for {name!r}; "
            "leave model empty to train the init_from model's architecture"
        )
    return init_model.architecture


def _recipe(
    request: training_service_pb2.TrainRequest,
    *,
    epochs: int,
    optimizer: str,
    val_split: float,
    has_weights: bool,
) -> dict[str, Any]:
    """The recipe's fields, checked, with their defaults filled in."""
    has = request.HasField
    freeze = _optional(
        has("freeze_epochs"),
        lambda v: contract.check_freeze_epochs(v, epochs, has_weights=has_weights),
        request.freeze_epochs,
        0,
    )
    warmup = _optional(
        has("warmup_epochs"),
        lambda v: contract.check_epochs_within("warmup_epochs", v, epochs, below=True),
        request.warmup_epochs,
        0,
    )
    patience = _optional(
        has("early_stopping_patience"),
        lambda v: contract.check_early_stopping(v, val_split),
        request.early_stopping_patience,
        0,
    )
    return {
        "freeze_epochs": freeze,
        "augment": checked(contract.check_augment, request.augment),
        "weight_decay": _optional(
            has("weight_decay"),
            contract.check_weight_decay,
            request.weight_decay,
            contract.default_weight_decay(optimizer),
        ),
        "label_smoothing": _optional(
            has("label_smoothing"),
            contract.check_label_smoothing,
            request.label_smoothing,
            contract.DEFAULT_LABEL_SMOOTHING,
        ),
        "lr_schedule": checked(contract.check_lr_schedule, request.lr_schedule),
        "warmup_epochs": warmup,
        "early_stopping_patience": patience,
        "precision": checked(contract.check_precision, request.precision),
    }


def _initial_weights(
    request: training_service_pb2.TrainRequest,
    model: str,
    init_model: ModelInfo | None,
    model_roots: Sequence[Path],
    init_reference: str,
) -> dict[str, Any] | None:
    """The params naming where the weights start (and, under `initial_weights`, the file
    a worker loads), or None for a random start (at most one source: checked before)."""
    pretrained = request.pretrained.strip()
    weights_path = request.weights_path.strip()
    if init_model is not None:
        source = f"task {init_model.task_id}'s model" if init_model.task_id else init_model.path
        if init_reference:
            source = f"model {init_reference} ({source})"
        return {
            "init_from": init_reference or init_model.task_id or init_model.path,
            "initial_weights": _weights("artifact", init_model.path, source),
        }
    if pretrained:
        try:
            weights = resolve_pretrained(model, pretrained)
        except UnknownWeights as exc:
            raise invalid_argument(str(exc)) from None
        problem = missing_file_problem(weights)
        if problem:
            raise failed_precondition(problem)
        return {
            "pretrained": weights.member,
            "initial_weights": _weights(
                "pretrained", str(weights.path), f"torchvision {model} {weights.member} weights"
            ),
        }
    if weights_path:
        path = resolve_under_roots(
            weights_path, model_roots, what="weights_path", hint=MODEL_ROOTS_HINT
        )
        if not path.is_file():
            raise invalid_argument(f"weights_path {weights_path!r} is not a file")
        return {
            "weights_path": str(path),
            "initial_weights": _weights("state_dict", str(path), f"weights file {path}"),
        }
    return None


def _weights(kind: str, path: str, description: str) -> dict[str, str]:
    return {"kind": kind, "path": path, "description": description}
