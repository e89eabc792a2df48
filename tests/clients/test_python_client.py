"""The Python client against real servers: typed calls, mapped errors, and a log
iterator that survives the server restarting under it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import tandem
from tandem import Client
from tandem.v1 import task_pb2
from tests.conftest import ServerThread, Stubs


def test_calls_and_errors(stubs: Stubs, shared_server: ServerThread) -> None:
    with Client(f"127.0.0.1:{shared_server.port}") as client:
        task = client.train(
            "mobilenet_v3_small", "synthetic", image_size=32, epochs=1, device="cpu"
        )
        events = list(client.logs(task.task_id))
        assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert client.get_task(task.task_id).state == task_pb2.TASK_STATE_SUCCEEDED
        assert task.task_id in [t.task_id for t in client.list_tasks(page_size=2)]
        assert "cpu" in client.resources().device_usage
        limits = client.update_limits({"cpu": {"inference": 4}})
        assert limits["cpu"]["inference"] == 4

        with pytest.raises(tandem.NotFound):
            client.get_task("missing")
        with pytest.raises(tandem.InvalidArgument) as info:
            client.train("resnet19", "synthetic")
        assert "resnet18" in info.value.message
        with pytest.raises(tandem.FailedPrecondition):
            client.cancel(task.task_id)
        with pytest.raises(tandem.FailedPrecondition):  # the shared server sees no GPU
            client.train("resnet18", "synthetic", device="cuda")
        assert issubclass(tandem.NotFound, tandem.TandemError)


def test_an_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"127.0.0.1:{port}", timeout=2) as client, pytest.raises(tandem.Unavailable):
        client.get_task("x")


def test_logs_resume_across_a_server_restart(fresh_server: Callable[..., ServerThread]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = fresh_server(grpc_port=port)
    client = Client(f"127.0.0.1:{port}", reconnect_timeout=120)
    client.update_limits({"cpu": {"training": 0}})  # the task waits across the restart
    task = client.train("mobilenet_v3_small", "synthetic", image_size=32, epochs=1, device="cpu")

    seen: list[task_pb2.TaskEvent] = []
    first_event = threading.Event()
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            for event in client.logs(task.task_id):
                seen.append(event)
                first_event.set()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
            first_event.set()

    follower = threading.Thread(target=follow)
    follower.start()
    assert first_event.wait(60)
    first.stop()  # the stream breaks under the follower
    second = fresh_server(grpc_port=port)
    with Client(f"127.0.0.1:{second.port}") as admin:
        admin.update_limits({"cpu": {"training": 1}})
    follower.join(240)
    client.close()
    assert not errors
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))  # nothing lost or repeated
    assert seen[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    assert any("requeued" in e.message for e in seen)


def test_following_from_past_the_end_returns(stubs: Stubs, shared_server: ServerThread) -> None:
    with Client(f"127.0.0.1:{shared_server.port}") as client:
        task = client.train(
            "mobilenet_v3_small", "synthetic", image_size=32, epochs=1, device="cpu"
        )
        last = list(client.logs(task.task_id))[-1]
        assert list(client.logs(task.task_id, from_seq=last.seq + 1)) == []
