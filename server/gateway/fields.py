"""The REST gateway's field types: the contract's ranges as pydantic annotations, each
checked with `tandem.contract`'s own function so a 422 carries the sentence the gRPC
server would give, and the strict base of every request body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tandem import contract
from tandem.contract import (
    AUGMENTS,
    DEFAULT_DEVICE,
    DEFAULT_PRIORITY,
    LR_SCHEDULES,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_LEARNING_RATE,
    MAX_LIMIT,
    MAX_MODEL_NAME,
    MAX_PRIORITY,
    MAX_REQUEST_ID,
    MAX_TOP_K,
    MAX_VAL_SPLIT,
    MAX_WEIGHT_DECAY,
    MIN_IMAGE_SIZE,
    MIN_PRIORITY,
    MIN_VAL_SPLIT,
    OPTIMIZERS,
    PRECISIONS,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Long enough for any path or name a person types; short enough that nothing odd gets through.
MAX_TEXT = 4096

# pydantic error types of our own; errors.py turns them into the gateway's sentences.
OUT_OF_RANGE = "out_of_range"  # ctx `sentence`: the contract's sentence, shown as it is
UNKNOWN_FIELD = "unknown_field"  # ctx `unknown`: "field 'lr'"; `known`: the fields, listed

T = TypeVar("T")


def refused(exc: contract.OutOfRange) -> PydanticCustomError:
    return PydanticCustomError(OUT_OF_RANGE, "{sentence}", {"sentence": str(exc)})


def contract_check(check: Callable[[T], T]) -> AfterValidator:
    """`check` from `tandem.contract` as a pydantic validator that keeps its sentence."""

    def validate(value: T) -> T:
        try:
            return check(value)
        except contract.OutOfRange as exc:
            raise refused(exc) from None

    return AfterValidator(validate)


def _integer(low: int, high: int) -> WithJsonSchema:
    # The bounds the check enforces, for /docs and schema-driven clients.
    return WithJsonSchema({"type": "integer", "minimum": low, "maximum": high})


def _number(low: float, high: float, *, exclusive_low: bool = False) -> WithJsonSchema:
    bound = "exclusiveMinimum" if exclusive_low else "minimum"
    return WithJsonSchema({"type": "number", bound: low, "maximum": high})


Priority = Annotated[
    int, contract_check(contract.check_priority), _integer(MIN_PRIORITY, MAX_PRIORITY)
]
Epochs = Annotated[int, contract_check(contract.check_epochs), _integer(1, MAX_EPOCHS)]
BatchSize = Annotated[int, contract_check(contract.check_batch_size), _integer(1, MAX_BATCH_SIZE)]
LearningRate = Annotated[
    float,
    contract_check(contract.check_learning_rate),
    _number(0, MAX_LEARNING_RATE, exclusive_low=True),
]
ImageSize = Annotated[
    int, contract_check(contract.check_image_size), _integer(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
]
ValSplit = Annotated[
    float, contract_check(contract.check_val_split), _number(MIN_VAL_SPLIT, MAX_VAL_SPLIT)
]
TopK = Annotated[int, contract_check(contract.check_top_k), _integer(1, MAX_TOP_K)]
RequestId = Annotated[
    str,
    contract_check(contract.check_request_id),
    WithJsonSchema({"type": "string", "maxLength": MAX_REQUEST_ID}),
]
# The model registry: a name to publish under, and a reference to a version.
ModelName = Annotated[
    str,
    contract_check(contract.check_model_name),
    WithJsonSchema(
        {"type": "string", "pattern": f"^[a-z0-9][a-z0-9._-]{{0,{MAX_MODEL_NAME - 1}}}$"}
    ),
]
ModelReference = Annotated[
    str,
    contract_check(contract.check_model_reference),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 2 * MAX_MODEL_NAME + 1}),
]
REFERENCE_HELP = (
    "A model in the registry: `NAME` (its latest version), `NAME/VERSION` or "
    "`NAME@ALIAS`, for example `cats@production`."
)
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


def names(values: tuple[str, ...]) -> str:
    return ", ".join(f"`{name}`" for name in values)


OPTIMIZER_NAMES = names(OPTIMIZERS)

# The recipe's fields. Ranges that depend on `epochs` (freeze_epochs, warmup_epochs)
# are checked by the server, whose sentence then comes back as 422.
FreezeEpochs = Annotated[int, _integer(0, MAX_EPOCHS)]
WarmupEpochs = Annotated[int, _integer(0, MAX_EPOCHS - 1)]
Patience = Annotated[int, contract_check(contract.check_patience), _integer(0, MAX_EPOCHS)]
WeightDecay = Annotated[
    float, contract_check(contract.check_weight_decay), _number(0, MAX_WEIGHT_DECAY)
]
LabelSmoothing = Annotated[
    float,
    contract_check(contract.check_label_smoothing),
    WithJsonSchema({"type": "number", "minimum": 0, "exclusiveMaximum": 1}),
]
Augment = Annotated[
    str, contract_check(contract.check_augment), WithJsonSchema({"enum": list(AUGMENTS)})
]
LrSchedule = Annotated[
    str,
    contract_check(contract.check_lr_schedule),
    WithJsonSchema({"enum": list(LR_SCHEDULES)}),
]
Precision = Annotated[
    str, contract_check(contract.check_precision), WithJsonSchema({"enum": list(PRECISIONS)})
]


class Body(BaseModel):
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
