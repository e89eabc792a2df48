"""Shared fixtures: a real Tandem server (gRPC on port 0, real worker processes, a real
SQLite file) running on its own event loop in a background thread, and sync stubs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from scheduler import DeviceInventory, StaticInventory
from server.config import ServerConfig, load
from tandem.v1 import (
    inference_service_pb2_grpc,
    resource_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)
from tests.harness.threaded import ServerThread


@dataclass
class Stubs:
    channel: grpc.Channel
    training: training_service_pb2_grpc.TrainingServiceStub
    inference: inference_service_pb2_grpc.InferenceServiceStub
    tasks: task_service_pb2_grpc.TaskServiceStub
    resources: resource_service_pb2_grpc.ResourceServiceStub

    @classmethod
    def connect(cls, port: int) -> Stubs:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        return cls(
            channel,
            training_service_pb2_grpc.TrainingServiceStub(channel),
            inference_service_pb2_grpc.InferenceServiceStub(channel),
            task_service_pb2_grpc.TaskServiceStub(channel),
            resource_service_pb2_grpc.ResourceServiceStub(channel),
        )

    def train(self, **fields: Any) -> Any:
        defaults: dict[str, Any] = {
            "model": "mobilenet_v3_small",
            "dataset": "synthetic",
            "device": "cpu",
            "image_size": 32,
            "batch_size": 16,
            "epochs": 1,
        }
        request = training_service_pb2.TrainRequest(**{**defaults, **fields})
        return self.training.Train(request, timeout=30).task

    def events(self, task_id: str, from_seq: int = 0, follow: bool = True) -> list[Any]:
        """The task's events; with `follow`, blocks until the stream ends (task ended)."""
        request = task_service_pb2.LogsRequest(task_id=task_id, from_seq=from_seq, follow=follow)
        return [r.event for r in self.tasks.Logs(request, timeout=240)]

    def wait_for(self, task_id: str, predicate: Callable[[Any], bool]) -> Any:
        """Follows the task's log until an event satisfies `predicate`; returns it."""
        request = task_service_pb2.LogsRequest(task_id=task_id, follow=True)
        stream = self.tasks.Logs(request, timeout=240)
        try:
            for response in stream:
                if predicate(response.event):
                    return response.event
        finally:
            stream.cancel()
        raise AssertionError(f"task {task_id} ended before the awaited event")

    def get(self, task_id: str) -> Any:
        return self.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=task_id)).task


def make_config(tmp: Path, **overrides: Any) -> ServerConfig:
    config = load(grpc_port=0, data_dir=str(tmp / "data"), env={})
    return replace(config, **{"cancel_grace_s": 5.0, **overrides})


def no_gpus() -> StaticInventory:
    """The machine with its GPUs hidden from the server under test, so `cuda` is refused
    the same way on every host, with a GPU or without. Tests that want GPUs pass an
    inventory of made-up ones (`StaticInventory`) or, marked `gpu`, the real one."""
    return StaticInventory()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server for the tests that do not need a fresh one; it sees no GPU."""
    server = ServerThread(make_config(tmp_path_factory.mktemp("shared")), no_gpus()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stubs(shared_server: ServerThread) -> Iterator[Stubs]:
    s = Stubs.connect(shared_server.port)
    yield s
    s.channel.close()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    """A factory of servers private to one test (stopped at its end); without an
    inventory a server sees no GPU."""
    started: list[ServerThread] = []

    def start(inventory: DeviceInventory | None = None, **overrides: Any) -> ServerThread:
        server = ServerThread(
            make_config(tmp_path, **overrides), inventory if inventory is not None else no_gpus()
        ).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
