"""`tandem.v1.TaskService`: read, list, cancel and follow tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator

from server.convert import KIND_FROM_PB, KIND_TO_PB, STATE_FROM_PB, event_to_pb, task_to_pb
from server.errors import Context, invalid_argument, streaming, unary
from server.manager import TaskManager
from server.page_tokens import BadPageToken
from server.records import TaskRecord, TaskState
from tandem import contract
from tandem.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc


def _task_id(value: str) -> str:
    task_id = value.strip()
    if not task_id:
        raise invalid_argument("task_id is required")
    return task_id


class TaskServicer(task_service_pb2_grpc.TaskServiceServicer):
    def __init__(self, manager: TaskManager) -> None:
        self._manager = manager

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
    ) -> AsyncIterator[task_service_pb2.LogsResponse]:
        if request.from_seq < 0:
            raise invalid_argument("from_seq must not be negative")
        task_id = _task_id(request.task_id)
        follow = request.follow if request.HasField("follow") else True
        async for event in self._manager.follow(task_id, request.from_seq, follow):
            yield task_service_pb2.LogsResponse(event=event_to_pb(task_id, event))
