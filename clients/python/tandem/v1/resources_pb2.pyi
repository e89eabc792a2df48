from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ConcurrencyLimits(_message.Message):
    __slots__ = ("training", "inference")
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    training: int
    inference: int
    def __init__(self, training: _Optional[int] = ..., inference: _Optional[int] = ...) -> None: ...

class DeviceUsage(_message.Message):
    __slots__ = ("training", "inference", "queued_training", "queued_inference")
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_TRAINING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_INFERENCE_FIELD_NUMBER: _ClassVar[int]
    training: int
    inference: int
    queued_training: int
    queued_inference: int
    def __init__(self, training: _Optional[int] = ..., inference: _Optional[int] = ..., queued_training: _Optional[int] = ..., queued_inference: _Optional[int] = ...) -> None: ...

class GpuMemoryInfo(_message.Message):
    __slots__ = ("total_gb", "allocated_gb", "free_gb", "device", "name", "estimated_gb")
    TOTAL_GB_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_GB_FIELD_NUMBER: _ClassVar[int]
    FREE_GB_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_GB_FIELD_NUMBER: _ClassVar[int]
    total_gb: float
    allocated_gb: float
    free_gb: float
    device: str
    name: str
    estimated_gb: float
    def __init__(self, total_gb: _Optional[float] = ..., allocated_gb: _Optional[float] = ..., free_gb: _Optional[float] = ..., device: _Optional[str] = ..., name: _Optional[str] = ..., estimated_gb: _Optional[float] = ...) -> None: ...
