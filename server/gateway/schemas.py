"""The REST gateway's JSON shapes: request bodies and responses, as the OpenAPI document shows them.

Names follow the seed's REST API and the `tandem.v1` contract (`task_id`, `model`,
`batch_size`, `device`, `priority`, ...). Ranges come from `tandem.contract` and are checked
with its own functions, so a value out of range gets the sentence the gRPC server would
give, with 422 before any call. Request models are strict about types (a string is not a
number) and refuse unknown fields, so a misspelt or legacy key (`lr`) is an error that
names it rather than a setting silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tandem import contract
from tandem.contract import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_INFER_BATCH_SIZE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_OPTIMIZER,
    DEFAULT_PRIORITY,
    DEFAULT_SEED,
    DEFAULT_TOP_K,
    DEFAULT_VAL_SPLIT,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_LEARNING_RATE,
    MAX_LIMIT,
    MAX_PRIORITY,
    MAX_REQUEST_ID,
    MAX_TOP_K,
    MAX_VAL_SPLIT,
    MIN_IMAGE_SIZE,
    MIN_PRIORITY,
    MIN_VAL_SPLIT,
    OPTIMIZERS,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Long enough for any path or name a person types; short enough that nothing odd gets through.
MAX_TEXT = 4096

# pydantic error types of our own; errors.py turns them into the gateway's sentences.
OUT_OF_RANGE = "out_of_range"  # ctx `sentence`: the contract's sentence, shown as it is
UNKNOWN_FIELD = "unknown_field"  # ctx `unknown`: "field 'lr'"; `known`: the fields, listed

T = TypeVar("T")


def _refused(exc: contract.OutOfRange) -> PydanticCustomError:
    return PydanticCustomError(OUT_OF_RANGE, "{sentence}", {"sentence": str(exc)})


def _contract_check(check: Callable[[T], T]) -> AfterValidator:
    """`check` from `tandem.contract` as a pydantic validator that keeps its sentence."""

    def validate(value: T) -> T:
        try:
            return check(value)
        except contract.OutOfRange as exc:
            raise _refused(exc) from None

    return AfterValidator(validate)


def _integer(low: int, high: int) -> WithJsonSchema:
    # The bounds the check enforces, for /docs and schema-driven clients.
    return WithJsonSchema({"type": "integer", "minimum": low, "maximum": high})


def _number(low: float, high: float, *, exclusive_low: bool = False) -> WithJsonSchema:
    bound = "exclusiveMinimum" if exclusive_low else "minimum"
    return WithJsonSchema({"type": "number", bound: low, "maximum": high})


Priority = Annotated[
    int, _contract_check(contract.check_priority), _integer(MIN_PRIORITY, MAX_PRIORITY)
]
Epochs = Annotated[int, _contract_check(contract.check_epochs), _integer(1, MAX_EPOCHS)]
BatchSize = Annotated[int, _contract_check(contract.check_batch_size), _integer(1, MAX_BATCH_SIZE)]
LearningRate = Annotated[
    float,
    _contract_check(contract.check_learning_rate),
    _number(0, MAX_LEARNING_RATE, exclusive_low=True),
]
ImageSize = Annotated[
    int, _contract_check(contract.check_image_size), _integer(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
]
ValSplit = Annotated[
    float, _contract_check(contract.check_val_split), _number(MIN_VAL_SPLIT, MAX_VAL_SPLIT)
]
TopK = Annotated[int, _contract_check(contract.check_top_k), _integer(1, MAX_TOP_K)]
RequestId = Annotated[
    str,
    _contract_check(contract.check_request_id),
    WithJsonSchema({"type": "string", "maxLength": MAX_REQUEST_ID}),
]
# Checked by LimitsConfigBody, whose sentence names the device as well.
Limit = Annotated[int, _integer(0, MAX_LIMIT)]

DEVICE_HELP = (
    "`cpu`, `cuda` (any GPU; the arbiter picks), `cuda:N`, or `auto` (a GPU if there is "
    "one, else the CPU). Asking for `cuda` on a machine without a GPU is refused with 409. "
    f"Default `{DEFAULT_DEVICE}`."
)
PRIORITY_HELP = (
    f"{MIN_PRIORITY} (most urgent) .. {MAX_PRIORITY}; equal priorities run in submit order. "
    f"Default {DEFAULT_PRIORITY}. Added in v2; accepted on v1 too."
)
REQUEST_ID_HELP = (
    f"Idempotency key, at most {MAX_REQUEST_ID} characters: a retried submit with the same "
    "key returns the first task instead of starting another. Default: none."
)
_OPTIMIZER_NAMES = ", ".join(f"`{name}`" for name in OPTIMIZERS)


class _Body(BaseModel):
    # strict: "5" is not 5 and 5.0 is not 5, so a wrong type is a clear 422, never a guess.
    # extra="forbid": a key this API does not know is refused (the schema says so too).
    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        # Before pydantic's own `extra_forbidden`, so the 422 can list the known fields.
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                noun = "field" if len(unknown) == 1 else "fields"
                raise PydanticCustomError(
                    UNKNOWN_FIELD,
                    "unknown {unknown}; the known fields are {known}",
                    {
                        "unknown": f"{noun} {', '.join(repr(key) for key in unknown)}",
                        "known": ", ".join(cls.model_fields),
                    },
                )
        return data


class TrainBody(_Body):
    """A training task to run (`POST /api/v1/train`, `POST /api/v2/train`)."""

    model: str = Field(
        min_length=1,
        max_length=MAX_TEXT,
        description="torchvision classification model name, for example `resnet18`, "
        "`mobilenet_v3_small` or `efficientnet_b0`; random initialisation. Required.",
        examples=["mobilenet_v3_small"],
    )
    dataset: str = Field(
        min_length=1,
        max_length=MAX_TEXT,
        description="ImageFolder directory (one sub-folder per class) under a dataset root "
        "(relative paths resolve under the first root), or `synthetic` for a small "
        "generated set. Required.",
        examples=["synthetic"],
    )
    epochs: Epochs | None = Field(
        None,
        description=f"Passes over the training split, 1..{MAX_EPOCHS}. Default {DEFAULT_EPOCHS}.",
    )
    batch_size: BatchSize | None = Field(
        None,
        description=f"Images per step, 1..{MAX_BATCH_SIZE}. Default {DEFAULT_BATCH_SIZE}.",
    )
    learning_rate: LearningRate | None = Field(
        None,
        description=f"Optimiser step size, greater than 0 and at most {MAX_LEARNING_RATE:g}. "
        f"Default {DEFAULT_LEARNING_RATE:g}.",
    )
    optimizer: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description=f"{_OPTIMIZER_NAMES} (any case). Default `{DEFAULT_OPTIMIZER}`.",
        examples=[DEFAULT_OPTIMIZER],
    )
    image_size: ImageSize | None = Field(
        None,
        description=f"Side in pixels images are resized to, {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}. "
        f"Default {DEFAULT_IMAGE_SIZE}.",
    )
    device: str | None = Field(None, max_length=MAX_TEXT, description=DEVICE_HELP)
    priority: Priority | None = Field(None, description=PRIORITY_HELP)
    seed: int | None = Field(
        None,
        ge=INT64_MIN,
        le=INT64_MAX,
        description="Seed for initialisation, data split and shuffling; any 64-bit integer. "
        f"Default {DEFAULT_SEED}.",
    )
    val_split: ValSplit | None = Field(
        None,
        description=f"Fraction held out for validation, {MIN_VAL_SPLIT:g}..{MAX_VAL_SPLIT:g}. "
        f"Default {DEFAULT_VAL_SPLIT:g}.",
    )
    request_id: RequestId | None = Field(None, description=REQUEST_ID_HELP)


class InferBody(_Body):
    """A batch-inference task over a dataset (`POST /api/v1/inference`, `/api/v2/inference`).

    Exactly one of `task_id` and `model_path` names the model."""

    task_id: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="A SUCCEEDED training task whose final model to use. Added in v2 "
        "(accepted on v1 too). Give this or `model_path`. Default: none.",
    )
    model_path: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="A model file written by Tandem, under the data dir or a model root. "
        "Give this or `task_id`. Default: none.",
    )
    dataset: str = Field(
        min_length=1,
        max_length=MAX_TEXT,
        description="ImageFolder directory, a flat folder of images, or `synthetic`. Required.",
        examples=["synthetic"],
    )
    batch_size: BatchSize | None = Field(
        None,
        description=f"Images per forward pass, 1..{MAX_BATCH_SIZE}. "
        f"Default {DEFAULT_INFER_BATCH_SIZE}.",
    )
    top_k: TopK | None = Field(
        None,
        description=f"Labels per image, 1..{MAX_TOP_K}, capped at the number of classes. "
        f"Default {DEFAULT_TOP_K}.",
    )
    device: str | None = Field(None, max_length=MAX_TEXT, description=DEVICE_HELP)
    priority: Priority | None = Field(None, description=PRIORITY_HELP)
    request_id: RequestId | None = Field(None, description=REQUEST_ID_HELP)


class LimitsBody(_Body):
    """New concurrency limits for one device; a missing kind keeps its limit."""

    training: Limit | None = Field(
        None, description=f"Training tasks at once, 0..{MAX_LIMIT}. Default: unchanged."
    )
    inference: Limit | None = Field(
        None, description=f"Inference tasks at once, 0..{MAX_LIMIT}. Default: unchanged."
    )


class LimitsConfigBody(_Body):
    """`POST /api/v2/resources/config`: the seed's shape,
    `{"max_concurrent": {"cuda": {"training": 1, "inference": 5}}}`."""

    max_concurrent: dict[str, LimitsBody] = Field(
        description="Per device (`cpu`, `cuda` for every GPU, or `cuda:N`): the limits to "
        "change. A device this machine lacks is 404. Required; `{}` changes nothing.",
        examples=[{"cuda": {"training": 1, "inference": 5}}],
    )

    @model_validator(mode="after")
    def _limits_in_range(self) -> LimitsConfigBody:
        for device, limits in self.max_concurrent.items():
            for kind in ("training", "inference"):
                value = getattr(limits, kind)
                if value is None:
                    continue
                try:
                    contract.check_limit(device, kind, value)
                except contract.OutOfRange as exc:
                    raise _refused(exc) from None
        return self


# -- responses ----------------------------------------------------------------------------


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
    optimizer: str = Field(description=f"{_OPTIMIZER_NAMES}.")
    image_size: int = Field(description=f"Side in pixels, {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}.")
    seed: int = Field(description="Seed for init, split and shuffling.")
    val_split: float = Field(
        description=f"Fraction held out for validation, {MIN_VAL_SPLIT:g}..{MAX_VAL_SPLIT:g}."
    )


class InferenceParamsOut(BaseModel):
    """The parameters a batch-inference task runs with (defaults filled in)."""

    task_id: str = Field(description="Training task whose model is used; empty if by path.")
    model_path: str = Field(description="Model file used.")
    dataset: str = Field(description="Resolved dataset path, or `synthetic`.")
    batch_size: int = Field(description="Images per forward pass, >= 1.")
    top_k: int = Field(description="Labels per image, >= 1.")
    model: str = Field(description="Architecture read from the model file.")
    image_size: int = Field(description="Side in pixels, read from the model file.")


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
