from tandem.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("states", "kind", "page_size", "page_token", "page_per_kind")
    STATES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_PER_KIND_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_task_pb2.TaskState]
    kind: _task_pb2.TaskKind
    page_size: int
    page_token: str
    page_per_kind: bool
    def __init__(self, states: _Optional[_Iterable[_Union[_task_pb2.TaskState, str]]] = ..., kind: _Optional[_Union[_task_pb2.TaskKind, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., page_per_kind: _Optional[bool] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token", "total_size", "kind_totals")
    class KindTotal(_message.Message):
        __slots__ = ("kind", "total_size")
        KIND_FIELD_NUMBER: _ClassVar[int]
        TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
        kind: _task_pb2.TaskKind
        total_size: int
        def __init__(self, kind: _Optional[_Union[_task_pb2.TaskKind, str]] = ..., total_size: _Optional[int] = ...) -> None: ...
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    KIND_TOTALS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.Task]
    next_page_token: str
    total_size: int
    kind_totals: _containers.RepeatedCompositeFieldContainer[ListTasksResponse.KindTotal]
    def __init__(self, tasks: _Optional[_Iterable[_Union[_task_pb2.Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., kind_totals: _Optional[_Iterable[_Union[ListTasksResponse.KindTotal, _Mapping]]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("task_id", "from_seq", "follow", "max_events_per_message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_PER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    from_seq: int
    follow: bool
    max_events_per_message: int
    def __init__(self, task_id: _Optional[str] = ..., from_seq: _Optional[int] = ..., follow: _Optional[bool] = ..., max_events_per_message: _Optional[int] = ...) -> None: ...

class LogsResponse(_message.Message):
    __slots__ = ("event", "events")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    event: _task_pb2.TaskEvent
    events: _containers.RepeatedCompositeFieldContainer[_task_pb2.TaskEvent]
    def __init__(self, event: _Optional[_Union[_task_pb2.TaskEvent, _Mapping]] = ..., events: _Optional[_Iterable[_Union[_task_pb2.TaskEvent, _Mapping]]] = ...) -> None: ...
