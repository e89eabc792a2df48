from tandem.v1 import model_pb2 as _model_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExportModelRequest(_message.Message):
    __slots__ = ("task_id", "model_path", "format")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    model_path: str
    format: _model_pb2.ExportFormat
    def __init__(self, task_id: _Optional[str] = ..., model_path: _Optional[str] = ..., format: _Optional[_Union[_model_pb2.ExportFormat, str]] = ...) -> None: ...

class ExportModelResponse(_message.Message):
    __slots__ = ("path", "size_bytes", "format", "max_abs_diff", "opset", "model_path", "task_id", "export_seconds")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EXPORT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    path: str
    size_bytes: int
    format: _model_pb2.ExportFormat
    max_abs_diff: float
    opset: int
    model_path: str
    task_id: str
    export_seconds: float
    def __init__(self, path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., format: _Optional[_Union[_model_pb2.ExportFormat, str]] = ..., max_abs_diff: _Optional[float] = ..., opset: _Optional[int] = ..., model_path: _Optional[str] = ..., task_id: _Optional[str] = ..., export_seconds: _Optional[float] = ...) -> None: ...
