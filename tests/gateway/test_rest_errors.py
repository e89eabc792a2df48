"""Every error reaches REST callers as the mapped HTTP status with `{"detail": "..."}`: from
the real server (400, 403, 404, 409, 422, 429), from a stand-in gRPC server for the codes
the real one does not give yet (401, 403 on credentials, 501, 504), and 503 with no server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from server.gateway import Timeouts, drain
from server.gateway.errors import GRPC_TO_HTTP, http_status
from tandem.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from tests.gateway.conftest import GatewayThread, LoopThread, Rest, follow_logs, sse_messages

TRAIN = {"model": "mobilenet_v3_small", "dataset": "synthetic", "image_size": 32, "device": "cpu"}


def test_the_one_mapping() -> None:
    code = grpc.StatusCode
    expected = {
        code.INVALID_ARGUMENT: 400,
        code.NOT_FOUND: 404,
        code.FAILED_PRECONDITION: 409,
        code.RESOURCE_EXHAUSTED: 429,
        code.UNAUTHENTICATED: 401,
        code.PERMISSION_DENIED: 403,
        code.UNAVAILABLE: 503,
        code.DEADLINE_EXCEEDED: 504,
        code.UNIMPLEMENTED: 501,
    }
    assert {c: GRPC_TO_HTTP[c] for c in expected} == expected
    assert http_status(code.INTERNAL) == 500 and http_status(code.UNKNOWN) == 500


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({**TRAIN, "model": "resnet19"}, 400, "resnet18"),
        ({**TRAIN, "optimizer": "lbfgs"}, 400, "adam"),
        ({**TRAIN, "device": "tpu"}, 400, "cpu"),
        ({**TRAIN, "dataset": "not-there"}, 404, "does not exist"),
        ({**TRAIN, "dataset": "/etc"}, 403, "outside the allowed roots"),
        ({**TRAIN, "device": "cuda"}, 409, "no GPU"),  # the server sees none (no_gpus)
        ({**TRAIN, "device": "cuda:1"}, 409, "GPU"),
        ({**TRAIN, "epochs": "five"}, 422, "epochs"),
        ({**TRAIN, "epochs": 0}, 422, "epochs"),
        ({**TRAIN, "priority": 11}, 422, "priority"),
        ({**TRAIN, "batch_size": 2.5}, 422, "batch_size"),
        ({**TRAIN, "model": 7}, 422, "model"),
        ({**TRAIN, "learning_rate": -1}, 422, "learning_rate"),
        ({"dataset": "synthetic"}, 422, "model"),
        ([TRAIN], 422, "body"),
    ],
)
def test_train_errors(rest: Rest, body: Any, status: int, words: str) -> None:
    response = rest.post("/api/v2/train", json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail


def test_malformed_bodies_and_unknown_tasks(rest: Rest) -> None:
    bad_json = rest.post(
        "/api/v1/train", data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.json()["detail"]
    for path in ("/api/v1/tasks/nope", "/api/v1/tasks/nope/logs", "/api/v2/tasks/nope"):
        response = rest.get(path)
        assert response.status_code == 404 and "nope" in response.json()["detail"]
    assert rest.post("/api/v2/tasks/nope/cancel").status_code == 404
    infer = rest.post("/api/v1/inference", json={"dataset": "synthetic"})
    assert infer.status_code == 400 and "task_id" in infer.json()["detail"]
    bad_state = rest.get("/api/v2/tasks", params={"state": "sleeping"})
    assert bad_state.status_code == 400 and "RUNNING" in bad_state.json()["detail"]
    limits = rest.post(
        "/api/v2/resources/config", json={"max_concurrent": {"tpu": {"training": 1}}}
    )
    assert limits.status_code == 404 and "tpu" in limits.json()["detail"]
    negative = rest.post(
        "/api/v2/resources/config", json={"max_concurrent": {"cpu": {"training": -1}}}
    )
    assert negative.status_code == 422
    lone_surrogate = b'{"model": "\\ud800", "dataset": "synthetic"}'
    odd = rest.post(
        "/api/v2/train", data=lone_surrogate, headers={"Content-Type": "application/json"}
    )
    assert odd.status_code == 422 and "model" in odd.json()["detail"]


def test_queue_full_is_429_and_a_queued_task_cancels_at_once(
    fresh_rest: Callable[..., Rest],
) -> None:
    rest = fresh_rest(max_waiting=1, prewarm_workers=0)
    # Nothing may run, so tasks stay queued and the queue fills.
    none = {"cpu": {"training": 0, "inference": 0}}
    assert rest.post("/api/v2/resources/config", json={"max_concurrent": none}).ok
    queued = rest.post("/api/v2/train", json=TRAIN).json()
    waiting = rest.get(f"/api/v2/tasks/{queued['task_id']}").json()
    assert waiting["state"] == "QUEUED" and waiting["queue_position"] == 1
    assert waiting["waiting_reason"]
    full = rest.post("/api/v2/train", json=TRAIN)
    assert full.status_code == 429 and "queue is full" in full.json()["detail"]
    assert full.headers["Retry-After"] == "1"
    usage = rest.get("/api/v2/resources").json()["device_usage"]["cpu"]
    assert usage["queued_training"] == 1 and usage["training"] == 0

    cancelled = rest.post(f"/api/v2/tasks/{queued['task_id']}/cancel").json()
    assert cancelled["state"] == "CANCELLED"
    assert rest.post("/api/v2/train", json=TRAIN).status_code == 200  # room again


def test_no_grpc_server_is_503() -> None:
    # A port nothing listens on: bound, then closed.
    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    gateway = GatewayThread(dead).start()
    try:
        rest = Rest(None, gateway)
        for response in (rest.get("/api/v1/health"), rest.get("/api/v2/tasks/x")):
            assert response.status_code == 503
            assert "unavailable" in response.json()["detail"] and dead in response.json()["detail"]
        assert rest.post("/api/v1/train", json=TRAIN).status_code == 503
    finally:
        gateway.stop()


def good_token() -> dict[str, str]:
    return {"Authorization": "Bearer good"}


# -- a stand-in gRPC server for the codes the real one does not give (yet) -------------


class GuardedTasks(task_service_pb2_grpc.TaskServiceServicer):
    """GetTask behind a token, as the coming auth will be; records what it was sent."""

    def __init__(self) -> None:
        self.tokens: list[str | None] = []
        # Set (from the server's thread) when a Logs stream ends for any reason.
        self.stream_closed = threading.Event()

    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: Any
    ) -> task_service_pb2.GetTaskResponse:
        token = dict(context.invocation_metadata()).get("authorization")
        self.tokens.append(token)
        if token is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a token is required")
        if token != "Bearer good":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this token may not read")
        if request.task_id == "slow":
            await asyncio.Event().wait()  # never answers: the gateway's deadline passes
        task = task_pb2.Task(
            task_id=request.task_id,
            kind=task_pb2.TASK_KIND_TRAINING,
            state=task_pb2.TASK_STATE_RUNNING,
            metrics={"loss": float("nan"), "accuracy": 0.5},
        )
        return task_service_pb2.GetTaskResponse(task=task)

    async def Logs(
        self, request: task_service_pb2.LogsRequest, context: Any
    ) -> AsyncIterator[task_service_pb2.LogsResponse]:
        """One event, then `broken` fails and anything else stays quiet until cancelled."""
        try:
            event = task_pb2.TaskEvent(seq=1, task_id=request.task_id, message="hello")
            yield task_service_pb2.LogsResponse(event=event)
            if request.task_id == "broken":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is going away")
            await asyncio.Event().wait()
        finally:
            self.stream_closed.set()


@pytest.fixture
def stand_in() -> Iterator[tuple[GatewayThread, GuardedTasks, Any]]:
    loop = LoopThread()
    tasks = GuardedTasks()
    health_servicer = health.aio.HealthServicer()

    async def start() -> tuple[Any, int]:
        server = grpc.aio.server()
        task_service_pb2_grpc.add_TaskServiceServicer_to_server(tasks, server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        return server, port

    server, port = loop.run(start())
    gateway = GatewayThread(
        f"127.0.0.1:{port}", loop=loop.loop, timeouts=Timeouts(unary_s=0.5), keep_alive_s=0.05
    ).start()
    yield gateway, tasks, health_servicer
    gateway.stop()
    loop.run(server.stop(0))
    loop.close()


def test_codes_from_a_stand_in_server(stand_in: tuple[GatewayThread, GuardedTasks, Any]) -> None:
    gateway, tasks, _ = stand_in
    rest = Rest(None, gateway)
    good = good_token()

    missing = rest.get("/api/v1/tasks/t1")
    assert missing.status_code == 401 and missing.json() == {"detail": "a token is required"}
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    denied = rest.get("/api/v1/tasks/t1", headers={"Authorization": "Bearer bad"})
    assert denied.status_code == 403 and "may not" in denied.json()["detail"]
    found = rest.get("/api/v1/tasks/t1", headers=good)
    assert found.status_code == 200
    # NaN is not JSON: a metric that is not a finite number is null.
    assert found.json()["metrics"] == {"loss": None, "accuracy": 0.5}
    assert tasks.tokens == [None, "Bearer bad", "Bearer good"]  # forwarded unchanged

    slow = rest.get("/api/v1/tasks/slow", headers=good)
    assert slow.status_code == 504
    unimplemented = rest.get("/api/v2/resources", headers=good)
    assert unimplemented.status_code == 501 and unimplemented.json()["detail"]
    not_serving = rest.get("/api/v1/health")
    assert not_serving.status_code == 503 and "NOT_SERVING" in not_serving.json()["detail"]
    odd = rest.get("/api/v1/tasks/t1", headers={"Authorization": "Bearer caf\u00e9"})
    assert odd.status_code == 400 and "ASCII" in odd.json()["detail"]


def test_log_streams_keep_alive_report_breaks_and_end_with_the_client(
    stand_in: tuple[GatewayThread, GuardedTasks, Any],
) -> None:
    gateway, tasks, _ = stand_in
    rest = Rest(None, gateway)
    good = good_token()

    # A stream that breaks after its headers went out ends with an `error` event.
    events = follow_logs(rest, "broken", headers=good)
    assert [e.event for e in events] == [None, "error"]
    assert events[0].id == "1" and events[0].data["message"] == "hello"
    assert events[1].data["status"] == 503 and "going away" in events[1].data["detail"]

    # A quiet task: keep-alive comments flow; when the client leaves, the gRPC stream ends.
    tasks.stream_closed.clear()
    with rest.get("/api/v1/tasks/quiet/logs", headers=good, stream=True) as response:
        lines = response.iter_lines(decode_unicode=True)
        assert next(lines) == "id: 1"
        assert next(line for line in lines if line.startswith(":")) == ": keep-alive"
    assert tasks.stream_closed.wait(timeout=30)


def test_stopping_the_gateway_ends_open_streams_with_a_503_event(
    stand_in: tuple[GatewayThread, GuardedTasks, Any],
) -> None:
    gateway, tasks, _ = stand_in
    rest = Rest(None, gateway)
    tasks.stream_closed.clear()
    with rest.get("/api/v1/tasks/quiet/logs", headers=good_token(), stream=True) as response:
        events = sse_messages(response)
        assert next(events).data["message"] == "hello"
        # What GatewayServer.stop does first; asyncio objects belong to the gateway's loop.
        gateway.loop.call_soon_threadsafe(drain, gateway.server.app)
        rest_of_stream = list(events)
    assert [e.event for e in rest_of_stream] == ["error"]
    assert rest_of_stream[0].data["status"] == 503
    assert "shutting down" in rest_of_stream[0].data["detail"]
    assert tasks.stream_closed.wait(timeout=30)
