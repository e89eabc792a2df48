"""The REST gateway's request bodies, as the OpenAPI document shows them (the responses
are in `server.gateway.responses`).

Names follow the seed's REST API and the `tandem.v1` contract (`task_id`, `model`,
`batch_size`, `device`, `priority`, ...). Ranges come from `tandem.contract` and are checked
with its own functions, so a value out of range gets the sentence the gRPC server would
give, with 422 before any call. Request models are strict about types (a string is not a
number) and refuse unknown fields, so a misspelt or legacy key (`lr`) is an error that
names it rather than a setting silently ignored.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from server.gateway.fields import (
    DEVICE_HELP,
    INT64_MAX,
    INT64_MIN,
    MAX_TEXT,
    OPTIMIZER_NAMES,
    PRIORITY_HELP,
    REFERENCE_HELP,
    REQUEST_ID_HELP,
    Augment,
    BatchSize,
    Body,
    Epochs,
    FreezeEpochs,
    ImageSize,
    LabelSmoothing,
    LearningRate,
    Limit,
    LrSchedule,
    ModelName,
    ModelReference,
    Patience,
    Precision,
    Priority,
    RequestId,
    TopK,
    ValSplit,
    WarmupEpochs,
    WeightDecay,
    names,
    refused,
)
from tandem import contract
from tandem.contract import (
    AUGMENTS,
    DEFAULT_AUGMENT,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_INFER_BATCH_SIZE,
    DEFAULT_LABEL_SMOOTHING,
    DEFAULT_LEARNING_RATE,
    DEFAULT_LR_SCHEDULE,
    DEFAULT_OPTIMIZER,
    DEFAULT_PRECISION,
    DEFAULT_SEED,
    DEFAULT_TOP_K,
    DEFAULT_VAL_SPLIT,
    LR_SCHEDULES,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_LEARNING_RATE,
    MAX_LIMIT,
    MAX_TOP_K,
    MAX_VAL_SPLIT,
    MAX_WEIGHT_DECAY,
    MIN_IMAGE_SIZE,
    MIN_VAL_SPLIT,
    PRECISIONS,
)


class TrainBody(Body):
    """A training task to run (`POST /api/v1/train`, `POST /api/v2/train`)."""

    model: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_TEXT,
        description="torchvision classification model name, for example `resnet18`, "
        "`mobilenet_v3_small` or `efficientnet_b0`. Required, except with `init_from` "
        "(whose architecture it then defaults to). Weights start random unless "
        "`init_from`, `pretrained` or `weights_path` says otherwise.",
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
        description=f"{OPTIMIZER_NAMES} (any case). Default `{DEFAULT_OPTIMIZER}`.",
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
    preemptible: bool | None = Field(
        None,
        description="Whether a more urgent task may preempt it: it then saves its whole "
        "state at a batch boundary, waits in the queue (`PREEMPTED`, then `QUEUED`) and "
        "resumes exactly where it stopped. Default true.",
    )
    init_from: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="Start from an earlier model: a model registry reference (`NAME`, "
        "`NAME/VERSION`, `NAME@ALIAS`), a SUCCEEDED training task's id, or a Tandem model "
        "file under the model roots, tried in that order. When the classes differ the "
        "classifier head is replaced and the rest kept. At most one of `init_from`, "
        "`pretrained`, `weights_path`.",
    )
    pretrained: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="torchvision weights for `model` by name (`DEFAULT`, `IMAGENET1K_V1`, "
        "...), read from the local torch hub cache (`$TORCH_HOME/hub/checkpoints`) only; "
        "a missing file is refused with 409 naming it and where it comes from.",
        examples=["DEFAULT"],
    )
    weights_path: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="A plain state dict in torchvision's layout under the model roots.",
    )
    freeze_epochs: FreezeEpochs | None = Field(
        None,
        description="Epochs that train only the classifier head, 0..`epochs`; needs one "
        "of the three above. Default 0.",
    )
    augment: Augment | None = Field(
        None, description=f"{names(AUGMENTS)}. Default `{DEFAULT_AUGMENT}`."
    )
    weight_decay: WeightDecay | None = Field(
        None,
        description=f"0..{MAX_WEIGHT_DECAY:g}. Default: the optimizer's own (0.01 for "
        "`adamw`, else 0).",
    )
    label_smoothing: LabelSmoothing | None = Field(
        None,
        description=f"At least 0 and below 1. Default {DEFAULT_LABEL_SMOOTHING:g}.",
    )
    lr_schedule: LrSchedule | None = Field(
        None,
        description=f"{names(LR_SCHEDULES)}, stepped every batch. Default `{DEFAULT_LR_SCHEDULE}`.",
    )
    warmup_epochs: WarmupEpochs | None = Field(
        None, description="Epochs of linear warm-up, 0..`epochs` - 1. Default 0."
    )
    early_stopping_patience: Patience | None = Field(
        None,
        description="Stop after this many epochs without a better validation loss; "
        "0 never stops early. Default 0.",
    )
    precision: Precision | None = Field(
        None,
        description=f"{names(PRECISIONS)}: `auto` is bf16 on a GPU that has it, else "
        f"fp16 with a gradient scaler, and fp32 on the CPU. Default `{DEFAULT_PRECISION}`.",
    )
    model_name: ModelName | None = Field(
        None,
        description="Publish the model, when the task succeeds, as the next version (1, 2, "
        "3, ...) of this name in the model registry: 1 to 64 characters, lower-case "
        "letters, digits, `-`, `_` and `.`, starting with a letter or digit. Default: none.",
        examples=["cats"],
    )

    @model_validator(mode="after")
    def _fields_agree(self) -> TrainBody:
        # What depends on more than one field; the same sentences as the server's.
        epochs = self.epochs if self.epochs is not None else DEFAULT_EPOCHS
        sources = (self.init_from or "", self.pretrained or "", self.weights_path or "")
        try:
            contract.check_model_given(self.model or "", self.init_from or "")
            contract.check_weights_sources(*sources)
            if self.freeze_epochs is not None:
                contract.check_freeze_epochs(
                    self.freeze_epochs, epochs, has_weights=any(s.strip() for s in sources)
                )
            if self.warmup_epochs is not None:
                contract.check_epochs_within(
                    "warmup_epochs", self.warmup_epochs, epochs, below=True
                )
            if self.early_stopping_patience is not None:
                val_split = self.val_split if self.val_split is not None else DEFAULT_VAL_SPLIT
                contract.check_early_stopping(self.early_stopping_patience, val_split)
        except contract.OutOfRange as exc:
            raise refused(exc) from None
        return self


class InferBody(Body):
    """A batch-inference task over a dataset (`POST /api/v1/inference`, `/api/v2/inference`).

    Exactly one of `task_id`, `model_path` and `model_name` names the model."""

    task_id: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="A SUCCEEDED training task whose final model to use. Added in v2 "
        "(accepted on v1 too). Give this, `model_path` or `model_name`. Default: none.",
    )
    model_path: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="A model file written by Tandem, under the data dir or a model root. "
        "Give this, `task_id` or `model_name`. Default: none.",
    )
    model_name: ModelReference | None = Field(
        None,
        description=f"{REFERENCE_HELP} Give this, `task_id` or `model_path`. Default: none.",
        examples=["cats@production"],
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


class LimitsBody(Body):
    """New concurrency limits for one device; a missing kind keeps its limit."""

    training: Limit | None = Field(
        None, description=f"Training tasks at once, 0..{MAX_LIMIT}. Default: unchanged."
    )
    inference: Limit | None = Field(
        None, description=f"Inference tasks at once, 0..{MAX_LIMIT}. Default: unchanged."
    )


class LimitsConfigBody(Body):
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
                    raise refused(exc) from None
        return self
