"""The numbers of Tandem's contract, defined once: ranges, defaults and sizes that the
server checks, the REST gateway documents and the CLI offers, and the sentence a value
outside its range gets, so gRPC and REST callers read the same words.

Each `check_*` returns the value (normalised where it says so) or raises `OutOfRange`,
whose `str()` is that sentence. Pure Python, no grpc: anything may import it. The
scheduler keeps its own copies of the priorities (it imports nothing of Tandem's);
tests/clients/test_contract.py holds the two together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# -- tasks --------------------------------------------------------------------------

# The states a task ends in (`tandem.v1.TaskState` names without the prefix); the last
# event of an ended task's log carries one of them.
TERMINAL_STATE_NAMES: Final = ("SUCCEEDED", "FAILED", "CANCELLED")

# -- logs -----------------------------------------------------------------------------

# `LogsRequest.max_events_per_message`: 0 sends one event per message (in `event`),
# 1 .. MAX_EVENTS_PER_MESSAGE groups the events ready together (in `events`).
MAX_EVENTS_PER_MESSAGE: Final = 1000
# A grouped message is closed before it passes this size (one event may be larger).
MAX_LOGS_MESSAGE_BYTES: Final = 1024 * 1024

# -- every submit ---------------------------------------------------------------------

# Lower runs first; equal priorities run in submit order.
MIN_PRIORITY: Final = 0
MAX_PRIORITY: Final = 10
DEFAULT_PRIORITY: Final = 5
DEFAULT_DEVICE: Final = "auto"
MAX_REQUEST_ID: Final = 128

# -- training -------------------------------------------------------------------------

MAX_EPOCHS: Final = 10_000
DEFAULT_EPOCHS: Final = 1
MAX_BATCH_SIZE: Final = 65_536
DEFAULT_BATCH_SIZE: Final = 32
MAX_LEARNING_RATE: Final = 10.0
DEFAULT_LEARNING_RATE: Final = 1e-3
OPTIMIZERS: Final = ("sgd", "adam", "adamw", "rmsprop")
DEFAULT_OPTIMIZER: Final = "adam"
MIN_IMAGE_SIZE: Final = 16
MAX_IMAGE_SIZE: Final = 1024
DEFAULT_IMAGE_SIZE: Final = 224
MIN_VAL_SPLIT: Final = 0.0
MAX_VAL_SPLIT: Final = 0.9
DEFAULT_VAL_SPLIT: Final = 0.2
DEFAULT_SEED: Final = 0
# The recipe (issue 16): see `TrainRequest` for what each one does.
AUGMENTS: Final = ("none", "light", "strong")
DEFAULT_AUGMENT: Final = "none"
MAX_WEIGHT_DECAY: Final = 1.0
# The optimizer's own default weight decay (torch's), used when none is given.
OPTIMIZER_WEIGHT_DECAY: Final = {"adamw": 0.01}
DEFAULT_LABEL_SMOOTHING: Final = 0.1
LR_SCHEDULES: Final = ("constant", "cosine", "step")
DEFAULT_LR_SCHEDULE: Final = "cosine"
PRECISIONS: Final = ("auto", "fp32", "bf16", "fp16")
DEFAULT_PRECISION: Final = "auto"

# -- inference ------------------------------------------------------------------------

DEFAULT_INFER_BATCH_SIZE: Final = 64
MAX_TOP_K: Final = 1000
DEFAULT_TOP_K: Final = 5

# -- export ---------------------------------------------------------------------------

# `ExportModelRequest.format` by the names REST and the CLI use: `tandem.v1.ExportFormat`
# is EXPORT_FORMAT_<NAME> (server/servicers/models.py maps one to the other, and fails
# at import if a name has no number).
EXPORT_FORMATS: Final = ("onnx", "torchscript")
# A gRPC export call's deadline: an export and its check take seconds to minutes, and
# may wait for their turn behind others.
EXPORT_TIMEOUT_S: Final = 900.0

# -- the model registry --------------------------------------------------------------

# A model name, and an alias of one of its versions: lower-case letters, digits, `-`,
# `_` and `.`; never `/` or `@`, which references use (`name/3`, `name@production`).
MAX_MODEL_NAME: Final = 64
# A bare name means its latest version, so `name@latest` means it too and no alias may
# take the word.
LATEST_ALIAS: Final = "latest"
# Versions are int32 on the wire.
MAX_VERSION: Final = 2**31 - 1

# -- resources and lists --------------------------------------------------------------

# Concurrency limits per device and kind: 0 (admit nothing) .. MAX_LIMIT.
MAX_LIMIT: Final = 256
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000

# -- transport ------------------------------------------------------------------------

DEFAULT_GRPC_PORT: Final = 50051
DEFAULT_HTTP_PORT: Final = 8000
# Big enough for an encoded image in Predict, small enough to refuse abuse.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024


class OutOfRange(ValueError):
    """A value the contract does not allow; `str(error)` names the field, the allowed
    values and the value given, in a sentence for a person."""


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_between(name: str, value: float, low: float, high: float) -> float:
    # Written so that NaN is out of every range.
    if not low <= value <= high:
        raise OutOfRange(
            f"{name} must be between {_number(low)} and {_number(high)}, got {_number(value)}"
        )
    return value


def check_count(name: str, value: int, high: int) -> int:
    """A positive integer up to `high`."""
    if value < 1:
        raise OutOfRange(f"{name} must be a positive integer, got {value}")
    if value > high:
        raise OutOfRange(f"{name} must be at most {high}, got {value}")
    return value


def check_priority(value: int) -> int:
    check_between("priority", value, MIN_PRIORITY, MAX_PRIORITY)
    return value


def check_request_id(value: str) -> str:
    if len(value) > MAX_REQUEST_ID:
        raise OutOfRange(f"request_id must be at most {MAX_REQUEST_ID} characters")
    return value


def check_epochs(value: int) -> int:
    return check_count("epochs", value, MAX_EPOCHS)


def check_batch_size(value: int) -> int:
    return check_count("batch_size", value, MAX_BATCH_SIZE)


def check_learning_rate(value: float) -> float:
    if not 0 < value <= MAX_LEARNING_RATE:
        raise OutOfRange(
            f"learning_rate must be greater than 0 and at most {MAX_LEARNING_RATE:g}, got {value:g}"
        )
    return value


def check_optimizer(value: str) -> str:
    """The optimizer's name in lower case; empty means the default."""
    name = value.strip().lower() or DEFAULT_OPTIMIZER
    if name not in OPTIMIZERS:
        raise OutOfRange(f"unknown optimizer {value!r}; choose one of {', '.join(OPTIMIZERS)}")
    return name


def check_image_size(value: int) -> int:
    check_between("image_size", value, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    return value


def check_val_split(value: float) -> float:
    return check_between("val_split", value, MIN_VAL_SPLIT, MAX_VAL_SPLIT)


def _choice(field: str, value: str, choices: tuple[str, ...], default: str) -> str:
    name = value.strip().lower() or default
    if name not in choices:
        raise OutOfRange(f"unknown {field} {value!r}; choose one of {', '.join(choices)}")
    return name


def check_augment(value: str) -> str:
    """The augmentation's name in lower case; empty means the default."""
    return _choice("augment", value, AUGMENTS, DEFAULT_AUGMENT)


def check_lr_schedule(value: str) -> str:
    """The schedule's name in lower case; empty means the default."""
    return _choice("lr_schedule", value, LR_SCHEDULES, DEFAULT_LR_SCHEDULE)


def check_precision(value: str) -> str:
    """The precision's name in lower case; empty means the default."""
    return _choice("precision", value, PRECISIONS, DEFAULT_PRECISION)


def default_weight_decay(optimizer: str) -> float:
    return OPTIMIZER_WEIGHT_DECAY.get(optimizer, 0.0)


def check_weight_decay(value: float) -> float:
    return check_between("weight_decay", value, 0.0, MAX_WEIGHT_DECAY)


def check_label_smoothing(value: float) -> float:
    # Written so that NaN is out of range, as in check_between.
    if not 0.0 <= value < 1.0:
        raise OutOfRange(f"label_smoothing must be at least 0 and below 1, got {_number(value)}")
    return value


def check_epochs_within(name: str, value: int, epochs: int, *, below: bool = False) -> int:
    """A number of epochs (`freeze_epochs`, `warmup_epochs`) from 0 up to the task's
    `epochs`, or below it with `below`."""
    high = epochs - 1 if below else epochs
    if not 0 <= value <= high:
        which = "below" if below else "at most"
        raise OutOfRange(
            f"{name} must be between 0 and {high} ({which} epochs, {epochs}), got {value}"
        )
    return value


def check_patience(value: int) -> int:
    """`early_stopping_patience`: 0 (never stop early) up to MAX_EPOCHS."""
    check_between("early_stopping_patience", value, 0, MAX_EPOCHS)
    return value


MODEL_REQUIRED = (
    "model is required: a torchvision classification model such as resnet18 or mobilenet_v3_small"
)


def check_model_given(model: str, init_from: str) -> None:
    """A training names its model, unless `init_from`'s model says which it is."""
    if not model.strip() and not init_from.strip():
        raise OutOfRange(MODEL_REQUIRED)


def check_weights_sources(init_from: str, pretrained: str, weights_path: str) -> None:
    """At most one of the three fields that say where a training's weights start."""
    given = [
        name
        for name, value in (
            ("init_from", init_from),
            ("pretrained", pretrained),
            ("weights_path", weights_path),
        )
        if value.strip()
    ]
    if len(given) > 1:
        raise OutOfRange(
            f"give at most one of init_from, pretrained and weights_path, not {' and '.join(given)}"
        )


def check_freeze_epochs(value: int, epochs: int, *, has_weights: bool) -> int:
    """`freeze_epochs`: 0 .. `epochs`, and above 0 only with weights to start from."""
    check_epochs_within("freeze_epochs", value, epochs)
    if value and not has_weights:
        raise OutOfRange(
            "freeze_epochs needs weights to start from: init_from, pretrained or weights_path"
        )
    return value


def check_early_stopping(patience: int, val_split: float) -> int:
    """`early_stopping_patience`, which needs a validation split to watch."""
    check_patience(patience)
    if patience and val_split == 0:
        raise OutOfRange(
            "early_stopping_patience watches the validation loss; it needs a val_split above 0"
        )
    return patience


def check_top_k(value: int) -> int:
    return check_count("top_k", value, MAX_TOP_K)


def check_limit(device: str, kind: str, value: int) -> int:
    """One concurrency limit of a limits change (`kind`: training or inference)."""
    if not 0 <= value <= MAX_LIMIT:
        raise OutOfRange(
            f"max_concurrent[{device!r}].{kind} must be between 0 and {MAX_LIMIT}, got {value}"
        )
    return value


def check_events_per_message(value: int) -> int:
    """`max_events_per_message`; 0 means one event per message, the old way."""
    if not 0 <= value <= MAX_EVENTS_PER_MESSAGE:
        raise OutOfRange(
            f"max_events_per_message must be between 0 and {MAX_EVENTS_PER_MESSAGE}, got {value}"
        )
    return value


def check_page_size(value: int) -> int:
    """A page size; 0 means the default."""
    if not 0 <= value <= MAX_PAGE_SIZE:
        raise OutOfRange(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {value}")
    return value or DEFAULT_PAGE_SIZE


_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# What the server's task ids look like (server/manager.py: 16 hexadecimal digits).
_TASK_ID_RE = re.compile(r"[0-9a-f]{16}")
# Aliases start with a letter, so `name@3` can never be read as a version.
_ALIAS_RE = re.compile(r"[a-z][a-z0-9._-]*")
_NAME_FORM = (
    f"1 to {MAX_MODEL_NAME} characters: lower-case letters, digits, '-', '_' and '.', "
    "starting with a letter or digit"
)
_ALIAS_FORM = (
    f"1 to {MAX_MODEL_NAME} characters: lower-case letters, digits, '-', '_' and '.', "
    f"starting with a letter, and not {LATEST_ALIAS!r} (a bare name means its latest version)"
)
REFERENCE_FORM = "NAME for its latest version, NAME/VERSION or NAME@ALIAS"


def _quoted(value: str) -> str:
    # What the caller sent, cut short: the sentence must stay readable.
    return repr(value if len(value) <= 80 else value[:77] + "...")


def check_model_name(value: str, field: str = "model_name") -> str:
    """A model's name in the registry (the name a training publishes its model as)."""
    if len(value) > MAX_MODEL_NAME or not _NAME_RE.fullmatch(value):
        raise OutOfRange(
            f"{field} must be {_NAME_FORM} (no '/' or '@', which references use), "
            f"got {_quoted(value)}"
        )
    if _TASK_ID_RE.fullmatch(value):
        # `init_from` reads a string as a registry name before a task id: a name that
        # looks like one could take over every `init_from` of that task.
        raise OutOfRange(
            f"{field} {_quoted(value)} looks like a task id (16 hexadecimal digits); "
            "choose a name that says what the model is"
        )
    return value


def check_alias(value: str, field: str = "alias") -> str:
    """An alias a client may set on a version (`production`, `staging`)."""
    if len(value) > MAX_MODEL_NAME or not _ALIAS_RE.fullmatch(value) or value == LATEST_ALIAS:
        raise OutOfRange(f"{field} must be {_ALIAS_FORM}, got {_quoted(value)}")
    return value


def check_version(value: int, field: str = "version") -> int:
    """A version number of a model name: 1, 2, 3, ..."""
    if not 1 <= value <= MAX_VERSION:
        raise OutOfRange(f"{field} must be a version number, 1 .. {MAX_VERSION}, got {value}")
    return value


@dataclass(frozen=True)
class ModelReference:
    """A model in the registry as a request names it: `name`, `name/3` or `name@alias`.
    At most one of `version` and `alias` is set; neither means the latest version."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        return f"{self.name}@{self.alias}" if self.alias is not None else self.name


def parse_model_reference(value: str, field: str = "model_name") -> ModelReference:
    """`value` as a reference; `name@latest` is the bare name. OutOfRange says which
    part is wrong when `value` is not one."""
    text = value.strip()
    name, slash, version = text.partition("/")
    name, at, alias = name.partition("@")
    reason = ""
    if (slash and at) or not name:
        reason = ""
    elif len(name) > MAX_MODEL_NAME or not _NAME_RE.fullmatch(name):
        reason = f": a name is {_NAME_FORM}"
    elif slash:
        if version.isascii() and version.isdigit() and 1 <= int(version) <= MAX_VERSION:
            return ModelReference(name, version=int(version))
        reason = f": a version is a number, 1 .. {MAX_VERSION}"
    elif at:
        if alias == LATEST_ALIAS:
            return ModelReference(name)
        if len(alias) <= MAX_MODEL_NAME and _ALIAS_RE.fullmatch(alias):
            return ModelReference(name, alias=alias)
        reason = f": an alias is {_ALIAS_FORM}"
    else:
        return ModelReference(name)
    raise OutOfRange(
        f"{field} {_quoted(value)} is not a model reference ({REFERENCE_FORM}){reason}"
    )


def check_model_reference(value: str, field: str = "model_name") -> str:
    """`value` (stripped) when it is a reference (see `parse_model_reference`)."""
    parse_model_reference(value, field)
    return value.strip()
