from tandem.v1 import task_pb2 as _task_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainRequest(_message.Message):
    __slots__ = ("model", "dataset", "epochs", "batch_size", "learning_rate", "optimizer", "image_size", "device", "priority", "seed", "val_split", "request_id", "preemptible", "init_from", "pretrained", "weights_path", "freeze_epochs", "augment", "weight_decay", "label_smoothing", "lr_schedule", "warmup_epochs", "early_stopping_patience", "precision", "model_name")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VAL_SPLIT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
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
    device: str
    priority: int
    seed: int
    val_split: float
    request_id: str
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
    def __init__(self, model: _Optional[str] = ..., dataset: _Optional[str] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., optimizer: _Optional[str] = ..., image_size: _Optional[int] = ..., device: _Optional[str] = ..., priority: _Optional[int] = ..., seed: _Optional[int] = ..., val_split: _Optional[float] = ..., request_id: _Optional[str] = ..., preemptible: _Optional[bool] = ..., init_from: _Optional[str] = ..., pretrained: _Optional[str] = ..., weights_path: _Optional[str] = ..., freeze_epochs: _Optional[int] = ..., augment: _Optional[str] = ..., weight_decay: _Optional[float] = ..., label_smoothing: _Optional[float] = ..., lr_schedule: _Optional[str] = ..., warmup_epochs: _Optional[int] = ..., early_stopping_patience: _Optional[int] = ..., precision: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...

class TrainResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...
