"""The REST gateway's responses, as the OpenAPI document shows them: the seed's JSON
shapes (kept exactly; fields may be added, none renamed or dropped) and Tandem's own."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from server.gateway.fields import OPTIMIZER_NAMES
from tandem.contract import (
    MAX_IMAGE_SIZE,
    MAX_LIMIT,
    MAX_PRIORITY,
    MAX_VAL_SPLIT,
    MIN_IMAGE_SIZE,
    MIN_PRIORITY,
    MIN_VAL_SPLIT,
)


class ErrorBody(BaseModel):
    """Every error the gateway answers, whatever its status."""

    detail: str = Field(description="What went wrong, in a sentence for a person.")


class TrainingParamsOut(BaseModel):
    """The parameters a training task runs with (defaults filled in)."""

    model: str = Field(description="torchvision model name.")
    dataset: str = Field(description="Resolved ImageFolder path, or `synthetic`.")
    epochs: int = Field(description="Passes over the training split, >= 1.")
    batch_size: int = Field(description="Images per step, >= 1.")
    learning_rate: float = Field(description="Optimiser step size, > 0.")
    optimizer: str = Field(description=f"{OPTIMIZER_NAMES}.")
    image_size: int = Field(description=f"Side in pixels, {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}.")
    seed: int = Field(description="Seed for init, split and shuffling.")
    val_split: float = Field(
        description=f"Fraction held out for validation, {MIN_VAL_SPLIT:g}..{MAX_VAL_SPLIT:g}."
    )
    preemptible: bool = Field(description="Whether a more urgent task may preempt it.")
    init_from: str = Field(description="Training task id or model file it started from; or empty.")
    pretrained: str = Field(description="torchvision weights it started from; or empty.")
    weights_path: str = Field(description="State-dict file it started from; or empty.")
    freeze_epochs: int = Field(description="Epochs that trained only the classifier head.")
    augment: str = Field(description="`none`, `light` or `strong`.")
    weight_decay: float = Field(description="Weight decay.")
    label_smoothing: float = Field(description="Label smoothing of the loss.")
    lr_schedule: str = Field(description="`constant`, `cosine` or `step`.")
    warmup_epochs: int = Field(description="Epochs of learning-rate warm-up.")
    early_stopping_patience: int = Field(description="0, or epochs without improvement to stop.")
    precision: str = Field(description="`auto`, `fp32`, `bf16` or `fp16`, as asked.")
    model_name: str = Field(description="The registry name its model is published under; or empty.")


class InferenceParamsOut(BaseModel):
    """The parameters a batch-inference task runs with (defaults filled in)."""

    task_id: str = Field(description="Training task whose model is used; empty if by path.")
    model_path: str = Field(description="Model file used.")
    dataset: str = Field(description="Resolved dataset path, or `synthetic`.")
    batch_size: int = Field(description="Images per forward pass, >= 1.")
    top_k: int = Field(description="Labels per image, >= 1.")
    model: str = Field(description="Architecture read from the model file.")
    image_size: int = Field(description="Side in pixels, read from the model file.")
    model_name: str = Field(
        description="The registry version used (`name/version`) when named by one; or empty."
    )


_PARAM_NOTE = " Top-level copy of the task's parameters (null when the kind has no such field)."


class TaskOut(BaseModel):
    """A task, flattened for REST: the `tandem.v1.Task` fields with `state` and `kind` as plain
    words, times as ISO-8601 strings, and the parameters both nested (`training` or
    `inference`) and copied to the top level, so a v1 client reads `task["model"]`."""

    task_id: str = Field(description="Server-assigned identifier.")
    kind: str = Field(description="`training` or `inference`.", examples=["training"])
    state: str = Field(
        description="`QUEUED`, `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELLED` or `PREEMPTED`.",
        examples=["QUEUED"],
    )
    priority: int = Field(
        description=f"Priority asked for, {MIN_PRIORITY} (most urgent) .. {MAX_PRIORITY}."
    )
    effective_priority: int = Field(
        description="Priority the arbiter orders by now (improves with waiting), "
        f"{MIN_PRIORITY}..{MAX_PRIORITY}."
    )
    device: str = Field(description="Device asked for: `cpu`, `cuda`, `cuda:N` or `auto`.")
    assigned_device: str = Field(
        description="Device the task was admitted to, for example `cpu` or `cuda:0`; "
        "empty while queued."
    )
    create_time: str | None = Field(description="When the task was accepted (ISO-8601, UTC).")
    start_time: str | None = Field(
        description="When the task last started running (ISO-8601, UTC); null before."
    )
    end_time: str | None = Field(
        description="When the task reached a terminal state (ISO-8601, UTC); null before."
    )
    metrics: dict[str, float | None] = Field(
        description="Latest metrics (`loss`, `accuracy`, `val_accuracy`, `images_per_sec`, "
        "`progress` 0..1, ...); a value that is not a finite number is null."
    )
    error: str = Field(description="Why the task FAILED or was CANCELLED; empty otherwise.")
    queue_position: int = Field(
        description="While QUEUED: 1-based position among tasks waiting for the same kind of "
        "slot on the same device; 0 otherwise."
    )
    waiting_reason: str = Field(description="While QUEUED: why it is not running yet.")
    request_id: str = Field(description="The idempotency key given at submit, if any.")
    model_path: str = Field(
        description="Training: the final model file once SUCCEEDED (empty before). "
        "Inference: the model file the task uses."
    )
    output_path: str = Field(
        description="File the task writes its results to (batch-inference predictions)."
    )
    last_seq: int = Field(
        description="Sequence number of the newest log event; resume logs with "
        "`from_seq = last_seq + 1`."
    )
    preemptions: int = Field(
        description="Times a more urgent task preempted it (training); it resumed each time."
    )
    training: TrainingParamsOut | None = Field(
        description="Training parameters; null for inference tasks."
    )
    inference: InferenceParamsOut | None = Field(
        description="Inference parameters; null for training tasks."
    )
    model: str | None = Field(description="Model architecture." + _PARAM_NOTE)
    dataset: str | None = Field(description="Dataset." + _PARAM_NOTE)
    epochs: int | None = Field(description="Epochs (training)." + _PARAM_NOTE)
    batch_size: int | None = Field(description="Batch size." + _PARAM_NOTE)
    learning_rate: float | None = Field(description="Learning rate (training)." + _PARAM_NOTE)
    optimizer: str | None = Field(description="Optimiser (training)." + _PARAM_NOTE)
    image_size: int | None = Field(description="Image side in pixels." + _PARAM_NOTE)
    seed: int | None = Field(description="Seed (training)." + _PARAM_NOTE)
    val_split: float | None = Field(description="Validation split (training)." + _PARAM_NOTE)
    preemptible: bool | None = Field(description="Preemptible (training)." + _PARAM_NOTE)
    top_k: int | None = Field(description="Labels per image (inference)." + _PARAM_NOTE)


class TaskListOut(BaseModel):
    """`GET /api/v2/tasks`: the seed's shape, newest tasks first."""

    training_tasks: list[TaskOut] = Field(description="Training tasks, newest first.")
    inference_tasks: list[TaskOut] = Field(description="Inference tasks, newest first.")
    total_training: int = Field(
        description="Training tasks matching the filter, over all pages (may exceed the list)."
    )
    total_inference: int = Field(
        description="Inference tasks matching the filter, over all pages (may exceed the list)."
    )
    next_page_token: str = Field(
        description="Pass as `page_token` for the next page of every kind; empty on the last."
    )


class DeviceUsageOut(BaseModel):
    """Running and waiting tasks of each kind on a device."""

    training: int = Field(description="Training tasks running, >= 0.")
    inference: int = Field(description="Inference tasks running (and served models), >= 0.")
    queued_training: int = Field(description="Training tasks waiting for this device, >= 0.")
    queued_inference: int = Field(description="Inference tasks waiting for this device, >= 0.")


class GpuMemoryOut(BaseModel):
    """Memory of one GPU, in GiB (named `_gb` as in the seed)."""

    total_gb: float = Field(description="Memory on the board, GiB.")
    allocated_gb: float = Field(description="Memory in use by any process, GiB.")
    free_gb: float = Field(description="Memory not in use, GiB.")
    device: str = Field(description="Tandem's name for this GPU, for example `cuda:0`.")
    name: str = Field(description="Model name reported by the driver.")
    estimated_gb: float = Field(
        description="The memory estimates of the tasks and served models admitted to this "
        "GPU, added up, GiB: what admission counts as taken."
    )


class LimitsOut(BaseModel):
    """Concurrency limits in force on a device."""

    training: int = Field(description=f"Training tasks at once, 0..{MAX_LIMIT}.")
    inference: int = Field(description=f"Inference tasks at once, 0..{MAX_LIMIT}.")


class ResourcesOut(BaseModel):
    """`GET /api/v2/resources`: the seed's shape plus the limits in force."""

    device_usage: dict[str, DeviceUsageOut] = Field(
        description="Per device (`cpu`, `cuda` summing every GPU, `cuda:N`): running and "
        "queued tasks per kind.",
        examples=[
            {"cpu": {"training": 1, "inference": 0}, "cuda": {"training": 1, "inference": 2}}
        ],
    )
    gpu_memory_info: dict[str, GpuMemoryOut] = Field(
        description="Per GPU (`GPU_0`, `GPU_1`, ...): memory in GiB. `{}` without a GPU.",
        examples=[{"GPU_0": {"total_gb": 24.0, "allocated_gb": 8.5, "free_gb": 15.5}}],
    )
    max_concurrent: dict[str, LimitsOut] = Field(
        description="Per device: the concurrency limits in force (`cuda` when every GPU "
        "has the same limits)."
    )
    preemptions_total: int = Field(
        description="Training tasks preempted since the server started (each yield once)."
    )


class LimitsConfigOut(BaseModel):
    """The limits in force after `POST /api/v2/resources/config`."""

    max_concurrent: dict[str, LimitsOut] = Field(
        description="Per device: the concurrency limits in force after the change."
    )


class HealthOut(BaseModel):
    """`GET /api/v1/health` when the gRPC server is serving (otherwise 503)."""

    status: str = Field(description="`ok`.", examples=["ok"])
    grpc_status: str = Field(
        description="What the gRPC health service says: `SERVING`.", examples=["SERVING"]
    )


class PredictionOut(BaseModel):
    """One label and its probability."""

    label: str = Field(description="Class name (the ImageFolder sub-folder name).")
    score: float | None = Field(
        description="Softmax probability, 0..1; null if the model's output is not a finite "
        "number (a diverged model)."
    )
    index: int = Field(description="Class index in the model's output, >= 0.")


class PredictOut(BaseModel):
    """`POST /api/v2/predict`: the most likely labels of one image."""

    predictions: list[PredictionOut] = Field(
        description="The `top_k` most likely labels, most likely first."
    )
    device: str = Field(description="The device that ran the model, for example `cpu`.")
    model_name: str = Field(
        description="The registry version that answered (`name/version`) when the model "
        "was named by `model_name`; else empty."
    )


class LogEventOut(BaseModel):
    """One task event, the JSON in an SSE message's `data:`."""

    seq: int = Field(description="Position in the task's log, from 1, without gaps.")
    time: str | None = Field(description="When the server recorded it (ISO-8601, UTC).")
    type: str = Field(description="`log` (a line of text), `metrics` or `state`.")
    level: str = Field(description="`debug`, `info`, `warning` or `error`.")
    message: str = Field(description="Text for people.")
    metrics: dict[str, float | None] = Field(
        description="Numbers reported with the event (metrics events); null if not finite."
    )
    state: str | None = Field(
        description="State entered (state events: `QUEUED`, `RUNNING`, `SUCCEEDED`, ...); "
        "null for other events. The last event of an ended task is its terminal state."
    )
    task_id: str = Field(description="The task the event belongs to.")


def event_stream_doc() -> dict[str, Any]:
    """OpenAPI content of the logs stream: the schema of one event, as OpenAPI 3.1 reads
    `schema` for `text/event-stream` (FastAPI cannot derive it from a generator)."""
    event = {
        "type": "object",
        "description": "One server-sent event. Lines starting with `:` are keep-alives "
        "and carry no event.",
        "required": ["data"],
        "properties": {
            "id": {"type": "string", "description": "The event's `seq`, for `Last-Event-ID`."},
            "event": {
                "type": "string",
                "description": "Absent (`message`) for task events; `error` when the stream "
                "breaks, with `data` `{detail, status}`.",
            },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": LogEventOut.model_json_schema(),
                "description": "The event as JSON.",
            },
            "retry": {"type": "integer", "description": "Not sent."},
        },
    }
    return {"text/event-stream": {"schema": event}}
