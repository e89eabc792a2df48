import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TASK_KIND_TRAINING: _ClassVar[TaskKind]
    TASK_KIND_INFERENCE: _ClassVar[TaskKind]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_QUEUED: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_SUCCEEDED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
    TASK_STATE_PREEMPTED: _ClassVar[TaskState]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_LOG: _ClassVar[EventType]
    EVENT_TYPE_METRICS: _ClassVar[EventType]
    EVENT_TYPE_STATE: _ClassVar[EventType]

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_LEVEL_UNSPECIFIED: _ClassVar[LogLevel]
    LOG_LEVEL_DEBUG: _ClassVar[LogLevel]
    LOG_LEVEL_INFO: _ClassVar[LogLevel]
    LOG_LEVEL_WARNING: _ClassVar[LogLevel]
    LOG_LEVEL_ERROR: _ClassVar[LogLevel]
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_TRAINING: TaskKind
TASK_KIND_INFERENCE: TaskKind
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_QUEUED: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_SUCCEEDED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELLED: TaskState
TASK_STATE_PREEMPTED: TaskState
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_LOG: EventType
EVENT_TYPE_METRICS: EventType
EVENT_TYPE_STATE: EventType
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_LEVEL_DEBUG: LogLevel
LOG_LEVEL_INFO: LogLevel
LOG_LEVEL_WARNING: LogLevel
LOG_LEVEL_ERROR: LogLevel

class Task(_message.Message):
    __slots__ = ("task_id", "kind", "state", "priority", "effective_priority", "device", "assigned_device", "create_time", "start_time", "end_time", "metrics", "error", "queue_position", "waiting_reason", "request_id", "training", "inference", "model_path", "output_path", "last_seq", "preemptions")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_DEVICE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: TaskKind
    state: TaskState
    priority: int
    effective_priority: int
    device: str
    assigned_device: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    metrics: _containers.ScalarMap[str, float]
    error: str
    queue_position: int
    waiting_reason: str
    request_id: str
    training: TrainingParams
    inference: InferenceParams
    model_path: str
    output_path: str
    last_seq: int
    preemptions: int
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., state: _Optional[_Union[TaskState, str]] = ..., priority: _Optional[int] = ..., effective_priority: _Optional[int] = ..., device: _Optional[str] = ..., assigned_device: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., error: _Optional[str] = ..., queue_position: _Optional[int] = ..., waiting_reason: _Optional[str] = ..., request_id: _Optional[str] = ..., training: _Optional[_Union[TrainingParams, _Mapping]] = ..., inference: _Optional[_Union[InferenceParams, _Mapping]] = ..., model_path: _Optional[str] = ..., output_path: _Optional[str] = ..., last_seq: _Optional[int] = ..., preemptions: _Optional[int] = ...) -> None: ...

class TrainingParams(_message.Message):
    __slots__ = ("model", "dataset", "epochs", "batch_size", "learning_rate", "optimizer", "image_size", "seed", "val_split", "preemptible", "init_from", "pretrained", "weights_path", "freeze_epochs", "augment", "weight_decay", "label_smoothing", "lr_schedule", "warmup_epochs", "early_stopping_patience", "precision", "model_name")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VAL_SPLIT_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIBLE_FIELD_NUMBER: _ClassVar[int]
    INIT_FROM_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_PATH_FIELD_NUMBER: _ClassVar[int]
    FREEZE_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    AUGMENT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    LABEL_SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model: str
    dataset: str
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    image_size: int
    seed: int
    val_split: float
    preemptible: bool
    init_from: str
    pretrained: str
    weights_path: str
    freeze_epochs: int
    augment: str
    weight_decay: float
    label_smoothing: float
    lr_schedule: str
    warmup_epochs: int
    early_stopping_patience: int
    precision: str
    model_name: str
    def __init__(self, model: _Optional[str] = ..., dataset: _Optional[str] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., optimizer: _Optional[str] = ..., image_size: _Optional[int] = ..., seed: _Optional[int] = ..., val_split: _Optional[float] = ..., preemptible: _Optional[bool] = ..., init_from: _Optional[str] = ..., pretrained: _Optional[str] = ..., weights_path: _Optional[str] = ..., freeze_epochs: _Optional[int] = ..., augment: _Optional[str] = ..., weight_decay: _Optional[float] = ..., label_smoothing: _Optional[float] = ..., lr_schedule: _Optional[str] = ..., warmup_epochs: _Optional[int] = ..., early_stopping_patience: _Optional[int] = ..., precision: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...

class InferenceParams(_message.Message):
    __slots__ = ("task_id", "model_path", "dataset", "batch_size", "top_k", "model", "image_size", "model_name")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    model_path: str
    dataset: str
    batch_size: int
    top_k: int
    model: str
    image_size: int
    model_name: str
    def __init__(self, task_id: _Optional[str] = ..., model_path: _Optional[str] = ..., dataset: _Optional[str] = ..., batch_size: _Optional[int] = ..., top_k: _Optional[int] = ..., model: _Optional[str] = ..., image_size: _Optional[int] = ..., model_name: _Optional[str] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("seq", "time", "type", "level", "message", "metrics", "state", "task_id")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    type: EventType
    level: LogLevel
    message: str
    metrics: _containers.ScalarMap[str, float]
    state: TaskState
    task_id: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[_Union[EventType, str]] = ..., level: _Optional[_Union[LogLevel, str]] = ..., message: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., state: _Optional[_Union[TaskState, str]] = ..., task_id: _Optional[str] = ...) -> None: ...
