"""`tandem.v1.TaskService`: read, list, cancel and follow tasks.

`Logs` sends bytes, not messages: each event is encoded once for all the followers of
its task (`EncodedEvents`), so the service is registered by `add_task_service`, whose
`Logs` handler passes bytes through as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from server.convert import KIND_FROM_PB, KIND_TO_PB, STATE_FROM_PB, event_to_pb, task_to_pb
from server.errors import Context, invalid_argument, streaming, unary
from server.event_log import StoredEvent
from server.manager import TaskManager
from server.page_tokens import BadPageToken
from server.records import TaskRecord, TaskState
from tandem import contract
from tandem.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc

SERVICE_NAME = "tandem.v1.TaskService"


class EncodedEvents:
    """Each event's `LogsResponse` bytes, made once and shared by every follower.

    Two encodings per event: alone in `event` (one event per message) and alone in
    `events`. Serialised messages concatenate into their merge, and a merge appends
    repeated fields, so the second kind joined is one message holding all the events.
    Recent events are kept by (task, seq); an entry counts only for the very event
    object it was made from, so a log read again from its file is encoded again.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._entries: dict[tuple[str, int], tuple[StoredEvent, bytes, bytes]] = {}

    def _entry(self, task_id: str, event: StoredEvent) -> tuple[StoredEvent, bytes, bytes]:
        key = (task_id, event.seq)
        entry = self._entries.get(key)
        if entry is None or entry[0] is not event:
            pb = event_to_pb(task_id, event)
            entry = (
                event,
                task_service_pb2.LogsResponse(event=pb).SerializeToString(),
                task_service_pb2.LogsResponse(events=[pb]).SerializeToString(),
            )
            if len(self._entries) >= self._capacity:
                # Insertion order: the oldest goes; followers are reading the newest.
                del self._entries[next(iter(self._entries))]
            self._entries[key] = entry
        return entry

    def single(self, task_id: str, event: StoredEvent) -> bytes:
        """A message with the event in `event`."""
        return self._entry(task_id, event)[1]

    def grouped(self, task_id: str, events: list[StoredEvent], most: int) -> Iterator[bytes]:
        """Messages with the events in `events`, in order: up to `most` per message, each
        under `contract.MAX_LOGS_MESSAGE_BYTES` unless one event alone is larger."""
        parts: list[bytes] = []
        size = 0
        for event in events:
            part = self._entry(task_id, event)[2]
            if parts and (len(parts) == most or size + len(part) > contract.MAX_LOGS_MESSAGE_BYTES):
                yield b"".join(parts)
                parts, size = [], 0
            parts.append(part)
            size += len(part)
        if parts:
            yield b"".join(parts)


def _task_id(value: str) -> str:
    task_id = value.strip()
    if not task_id:
        raise invalid_argument("task_id is required")
    return task_id


class TaskServicer(task_service_pb2_grpc.TaskServiceServicer):
    def __init__(self, manager: TaskManager, encoded: EncodedEvents | None = None) -> None:
        self._manager = manager
        self._encoded = encoded or EncodedEvents()

    def _pb(self, task: TaskRecord) -> task_pb2.Task:
        return task_to_pb(task, waiting=self._manager.waiting_info(task.task_id))

    @unary
    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: Context
    ) -> task_service_pb2.GetTaskResponse:
        task = self._manager.get(_task_id(request.task_id))
        return task_service_pb2.GetTaskResponse(task=self._pb(task))

    @unary
    async def ListTasks(
        self, request: task_service_pb2.ListTasksRequest, context: Context
    ) -> task_service_pb2.ListTasksResponse:
        try:
            page_size = contract.check_page_size(request.page_size)
        except contract.OutOfRange as exc:
            raise invalid_argument(str(exc)) from None
        try:
            states = [STATE_FROM_PB[s] for s in request.states]
        except KeyError:
            raise invalid_argument("states holds an unknown or unspecified state") from None
        kind = None
        if request.kind != task_pb2.TASK_KIND_UNSPECIFIED:
            if request.kind not in KIND_FROM_PB:
                raise invalid_argument(f"unknown kind {request.kind}")
            kind = KIND_FROM_PB[request.kind]
        try:
            page = self._manager.page(
                states=states,
                kind=kind,
                page_size=page_size,
                page_token=request.page_token,
                per_kind=request.page_per_kind,
            )
        except BadPageToken as exc:
            raise invalid_argument(str(exc)) from None
        queued = any(t.state is TaskState.QUEUED for t in page.tasks)
        waiting = self._manager.waiting_infos() if queued else {}
        KindTotal = task_service_pb2.ListTasksResponse.KindTotal
        return task_service_pb2.ListTasksResponse(
            tasks=[task_to_pb(t, waiting=waiting.get(t.task_id)) for t in page.tasks],
            next_page_token=page.next_page_token,
            total_size=sum(page.totals.values()),
            kind_totals=[
                KindTotal(kind=KIND_TO_PB[k], total_size=n) for k, n in page.totals.items()
            ],
        )

    @unary
    async def CancelTask(
        self, request: task_service_pb2.CancelTaskRequest, context: Context
    ) -> task_service_pb2.CancelTaskResponse:
        task = self._manager.cancel(_task_id(request.task_id))
        return task_service_pb2.CancelTaskResponse(task=self._pb(task))

    @streaming
    async def Logs(
        self, request: task_service_pb2.LogsRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """Serialised `LogsResponse`s (see `add_task_service`)."""
        if request.from_seq < 0:
            raise invalid_argument("from_seq must not be negative")
        try:
            most = contract.check_events_per_message(request.max_events_per_message)
        except contract.OutOfRange as exc:
            raise invalid_argument(str(exc)) from None
        task_id = _task_id(request.task_id)
        follow = request.follow if request.HasField("follow") else True
        encoded = self._encoded
        async for batch in self._manager.follow(task_id, request.from_seq, follow):
            if most:
                for message in encoded.grouped(task_id, batch, most):
                    yield message
            else:
                for event in batch:
                    yield encoded.single(task_id, event)


class _Recorder:
    """Stands in for a server to catch the method handlers generated code registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers = dict(handlers)


def add_task_service(servicer: TaskServicer, server: grpc.aio.Server) -> None:
    """Registers TaskService: the generated handlers, but `Logs` without a response
    serializer, so the bytes its servicer yields go out as they are."""
    recorder = _Recorder()
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(servicer, recorder)
    if "Logs" not in recorder.handlers:
        raise RuntimeError("the generated TaskService registration has changed")
    handlers = {
        **recorder.handlers,
        "Logs": grpc.unary_stream_rpc_method_handler(
            servicer.Logs, request_deserializer=task_service_pb2.LogsRequest.FromString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
