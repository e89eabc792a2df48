from tandem.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferRequest(_message.Message):
    __slots__ = ("task_id", "model_path", "dataset", "batch_size", "top_k", "device", "priority", "request_id", "model_name")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    model_path: str
    dataset: str
    batch_size: int
    top_k: int
    device: str
    priority: int
    request_id: str
    model_name: str
    def __init__(self, task_id: _Optional[str] = ..., model_path: _Optional[str] = ..., dataset: _Optional[str] = ..., batch_size: _Optional[int] = ..., top_k: _Optional[int] = ..., device: _Optional[str] = ..., priority: _Optional[int] = ..., request_id: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("task_id", "model_path", "image", "top_k", "device", "priority", "model_name")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    model_path: str
    image: bytes
    top_k: int
    device: str
    priority: int
    model_name: str
    def __init__(self, task_id: _Optional[str] = ..., model_path: _Optional[str] = ..., image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., device: _Optional[str] = ..., priority: _Optional[int] = ..., model_name: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("label", "score", "index")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    index: int
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., index: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions", "device", "model_name")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    device: str
    model_name: str
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., device: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...
