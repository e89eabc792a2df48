"""The v1 REST API (the standard v2.1 service's surface): train, inference, task status, live
logs as server-sent events, health. `add_routes` also mounts these under `/api/v2`, since
every v1 call keeps working there ("no existing code breaks").
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Response

from server.gateway import sse
from server.gateway.convert import is_terminal, message, task_json
from server.gateway.deps import RpcDep, SettingsDep
from server.gateway.errors import error_responses
from server.gateway.fields import INT64_MAX
from server.gateway.responses import HealthOut, TaskOut, event_stream_doc
from server.gateway.schemas import InferBody, TrainBody
from tandem.v1 import inference_service_pb2, training_service_pb2

TaskIdPath = Annotated[str, Path(description="The task's id, as returned at submit.")]


async def train(body: TrainBody, rpc: RpcDep) -> TaskOut:
    """Submits a training task; returns it at once, `QUEUED`. Follow it with `.../logs`."""
    return task_json(await rpc.train(message(training_service_pb2.TrainRequest, body)))


async def inference(body: InferBody, rpc: RpcDep) -> TaskOut:
    """Submits a batch-inference task over a dataset with a trained model (`task_id`) or a
    model file (`model_path`); returns it at once, `QUEUED`. Predictions (top-k per image)
    go to the task's `output_path`."""
    return task_json(await rpc.infer(message(inference_service_pb2.InferRequest, body)))


async def get_task(task_id: TaskIdPath, rpc: RpcDep) -> TaskOut:
    """Returns a task: its state, device, times, latest metrics, parameters and, while
    queued, its place in the queue and why it waits."""
    return task_json(await rpc.get_task(task_id))


async def logs(
    task_id: TaskIdPath,
    rpc: RpcDep,
    settings: SettingsDep,
    follow: Annotated[
        bool,
        Query(
            description="`true`: after the history, stream live events until the task "
            "ends (the last event is its terminal state). `false`: the history only. "
            "Default `true`."
        ),
    ] = True,
    from_seq: Annotated[
        int,
        Query(
            ge=0,
            le=INT64_MAX,
            description="First event `seq` to send; 0 or 1 for the whole history. Default 0.",
        ),
    ] = 0,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Sent by a reconnecting EventSource: the stream resumes after this "
            "`seq` (wins over an earlier `from_seq`). Default: none.",
        ),
    ] = None,
) -> Response:
    """A task's log as server-sent events: the stored history, then (with `follow`) live
    events until the task ends. Each message's `id` is the event's `seq`. `204` when the
    task has ended and nothing is left after the requested point, which also tells an
    EventSource to stop reconnecting."""
    # A unary read first, so an unknown task is a plain 404, not a broken stream.
    task = await rpc.get_task(task_id)
    start = from_seq
    resumed = sse.parse_last_event_id(last_event_id)
    if resumed is not None:
        start = max(start, resumed + 1)
    if is_terminal(task.state) and start > task.last_seq:
        return Response(status_code=204)
    call = rpc.logs(task_id, start, follow)
    body = sse.stream(
        call,
        target=rpc.backend.target,
        keep_alive_s=settings.keep_alive_s,
        closing=rpc.backend.closing,
    )
    return sse.EventStreamResponse(body, headers=sse.HEADERS)


async def health(rpc: RpcDep) -> HealthOut:
    """`ok` when the gRPC server's health service says SERVING; 503 otherwise."""
    status = await rpc.health()
    if status != "SERVING":
        raise HTTPException(503, f"the Tandem gRPC server is not serving (status {status})")
    return HealthOut(status="ok", grpc_status=status)


def add_routes(router: APIRouter) -> None:
    """Adds the v1 operations to `router` (`/api/v1` or `/api/v2`)."""
    errors = error_responses()
    router.add_api_route(
        "/train",
        train,
        methods=["POST"],
        response_model=TaskOut,
        responses=errors,
        summary="Submit a training task",
    )
    router.add_api_route(
        "/inference",
        inference,
        methods=["POST"],
        response_model=TaskOut,
        responses=errors,
        summary="Submit a batch-inference task",
    )
    router.add_api_route(
        "/tasks/{task_id}",
        get_task,
        methods=["GET"],
        response_model=TaskOut,
        responses=errors,
        summary="Get a task",
    )
    router.add_api_route(
        "/tasks/{task_id}/logs",
        logs,
        methods=["GET"],
        response_class=sse.EventStreamResponse,
        responses={
            200: {"description": "The event stream.", "content": event_stream_doc()},
            204: {"description": "The task has ended and no events are left to send."},
            **error_responses(explicit_json=True),
        },
        summary="Follow a task's log (server-sent events)",
    )
    router.add_api_route(
        "/health",
        health,
        methods=["GET"],
        response_model=HealthOut,
        responses=errors,
        summary="Health of the service",
    )


router = APIRouter(prefix="/api/v1", tags=["v1"])
add_routes(router)
