from tandem.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetResourcesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetResourcesResponse(_message.Message):
    __slots__ = ("device_usage", "gpu_memory_info", "max_concurrent", "preemptions_total")
    class DeviceUsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _resources_pb2.DeviceUsage
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_resources_pb2.DeviceUsage, _Mapping]] = ...) -> None: ...
    class GpuMemoryInfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _resources_pb2.GpuMemoryInfo
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_resources_pb2.GpuMemoryInfo, _Mapping]] = ...) -> None: ...
    class MaxConcurrentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _resources_pb2.ConcurrencyLimits
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_resources_pb2.ConcurrencyLimits, _Mapping]] = ...) -> None: ...
    DEVICE_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_INFO_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    device_usage: _containers.MessageMap[str, _resources_pb2.DeviceUsage]
    gpu_memory_info: _containers.MessageMap[str, _resources_pb2.GpuMemoryInfo]
    max_concurrent: _containers.MessageMap[str, _resources_pb2.ConcurrencyLimits]
    preemptions_total: int
    def __init__(self, device_usage: _Optional[_Mapping[str, _resources_pb2.DeviceUsage]] = ..., gpu_memory_info: _Optional[_Mapping[str, _resources_pb2.GpuMemoryInfo]] = ..., max_concurrent: _Optional[_Mapping[str, _resources_pb2.ConcurrencyLimits]] = ..., preemptions_total: _Optional[int] = ...) -> None: ...

class UpdateLimitsRequest(_message.Message):
    __slots__ = ("max_concurrent",)
    class MaxConcurrentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _resources_pb2.ConcurrencyLimits
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_resources_pb2.ConcurrencyLimits, _Mapping]] = ...) -> None: ...
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    max_concurrent: _containers.MessageMap[str, _resources_pb2.ConcurrencyLimits]
    def __init__(self, max_concurrent: _Optional[_Mapping[str, _resources_pb2.ConcurrencyLimits]] = ...) -> None: ...

class UpdateLimitsResponse(_message.Message):
    __slots__ = ("max_concurrent",)
    class MaxConcurrentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _resources_pb2.ConcurrencyLimits
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_resources_pb2.ConcurrencyLimits, _Mapping]] = ...) -> None: ...
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    max_concurrent: _containers.MessageMap[str, _resources_pb2.ConcurrencyLimits]
    def __init__(self, max_concurrent: _Optional[_Mapping[str, _resources_pb2.ConcurrencyLimits]] = ...) -> None: ...
