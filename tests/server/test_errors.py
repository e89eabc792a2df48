"""Every bad request gets the right status code and a sentence, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from tandem.v1 import (
    resource_service_pb2,
    resources_pb2,
    task_pb2,
    task_service_pb2,
)
from tests.conftest import ServerThread, Stubs

Code = grpc.StatusCode


def _train_error(stubs: Stubs, **fields: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stubs.train(**fields)
    return info.value


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"model": "resnet19"}, Code.INVALID_ARGUMENT, "resnet18"),
        ({"model": ""}, Code.INVALID_ARGUMENT, "model is required"),
        ({"epochs": 0}, Code.INVALID_ARGUMENT, "epochs"),
        ({"batch_size": -4}, Code.INVALID_ARGUMENT, "batch_size"),
        ({"image_size": 0}, Code.INVALID_ARGUMENT, "image_size"),
        ({"image_size": 4096}, Code.INVALID_ARGUMENT, "image_size"),
        ({"learning_rate": 0.0}, Code.INVALID_ARGUMENT, "learning_rate"),
        ({"val_split": 0.95}, Code.INVALID_ARGUMENT, "val_split"),
        ({"optimizer": "lbfgs"}, Code.INVALID_ARGUMENT, "adam"),
        ({"priority": 11}, Code.INVALID_ARGUMENT, "priority"),
        ({"priority": -1}, Code.INVALID_ARGUMENT, "priority"),
        ({"device": "tpu"}, Code.INVALID_ARGUMENT, "cpu"),
        # The shared server sees no GPU (no_gpus), on any host.
        ({"device": "cuda"}, Code.FAILED_PRECONDITION, "GPU"),
        ({"device": "cuda:1"}, Code.FAILED_PRECONDITION, "GPU"),
        ({"dataset": ""}, Code.INVALID_ARGUMENT, "dataset is required"),
        ({"dataset": "/no/such/folder"}, Code.NOT_FOUND, "does not exist"),
        ({"dataset": "not-there"}, Code.NOT_FOUND, "does not exist"),
        ({"request_id": "x" * 200}, Code.INVALID_ARGUMENT, "request_id"),
    ],
)
def test_train_validation(stubs: Stubs, fields: dict[str, Any], code: Code, words: str) -> None:
    error = _train_error(stubs, **fields)
    assert error.code() == code
    assert words in error.details()
    assert "Traceback" not in error.details()


def test_dataset_outside_the_roots_is_denied(stubs: Stubs, tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "a.png").write_bytes(b"")
    error = _train_error(stubs, dataset=str(tmp_path))
    assert error.code() == Code.PERMISSION_DENIED


def test_dataset_symlink_escaping_the_root_is_denied(
    shared_server: ServerThread, stubs: Stubs, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "dogs").mkdir(parents=True)
    root = shared_server.config.dataset_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    link = root / f"escape-{tmp_path.name}"
    link.symlink_to(outside)
    error = _train_error(stubs, dataset=link.name)
    assert error.code() == Code.PERMISSION_DENIED


def test_a_folder_that_is_no_image_folder_is_invalid(
    shared_server: ServerThread, stubs: Stubs
) -> None:
    folder = shared_server.config.dataset_roots[0] / "empty-folder"
    folder.mkdir(parents=True, exist_ok=True)
    error = _train_error(stubs, dataset="empty-folder")
    assert error.code() == Code.INVALID_ARGUMENT


def test_unknown_task(stubs: Stubs) -> None:
    for call, request in [
        (stubs.tasks.GetTask, task_service_pb2.GetTaskRequest(task_id="nope")),
        (stubs.tasks.CancelTask, task_service_pb2.CancelTaskRequest(task_id="nope")),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            call(request)
        assert info.value.code() == Code.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        list(stubs.tasks.Logs(task_service_pb2.LogsRequest(task_id="nope")))
    assert info.value.code() == Code.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stubs.tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=""))
    assert info.value.code() == Code.INVALID_ARGUMENT


def test_cancel_an_ended_task_is_a_failed_precondition(stubs: Stubs) -> None:
    task = stubs.train(epochs=1)
    stubs.events(task.task_id)
    with pytest.raises(grpc.RpcError) as info:
        stubs.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.task_id))
    assert info.value.code() == Code.FAILED_PRECONDITION
    assert "SUCCEEDED" in info.value.details()


def test_bad_page_token_and_page_size(stubs: Stubs) -> None:
    for request in [
        task_service_pb2.ListTasksRequest(page_token="garbage"),
        task_service_pb2.ListTasksRequest(page_size=5000),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stubs.tasks.ListTasks(request)
        assert info.value.code() == Code.INVALID_ARGUMENT


def test_update_limits_errors(stubs: Stubs) -> None:
    Limits = resources_pb2.ConcurrencyLimits
    cases = [
        ({"cpu": Limits(training=-1)}, Code.INVALID_ARGUMENT),
        ({"tpu": Limits(training=1)}, Code.NOT_FOUND),
        # The shared server sees no GPU (no_gpus), on any host: there is no cuda:0.
        ({"cuda:0": Limits(inference=5)}, Code.NOT_FOUND),
    ]
    for limits, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            stubs.resources.UpdateLimits(
                resource_service_pb2.UpdateLimitsRequest(max_concurrent=limits)
            )
        assert info.value.code() == code


def test_resources_on_a_cpu_only_machine(stubs: Stubs) -> None:
    reply = stubs.resources.GetResources(resource_service_pb2.GetResourcesRequest())
    assert set(reply.device_usage) == {"cpu"}
    assert dict(reply.gpu_memory_info) == {}
    assert reply.max_concurrent["cpu"].training >= 0


def test_a_task_whose_model_cannot_run_fails_with_a_reason(stubs: Stubs) -> None:
    # AlexNet's pooling cannot shrink a 16 px image: the worker reports it, the task FAILS.
    task = stubs.train(model="alexnet", image_size=16)
    events = stubs.events(task.task_id)
    failed = stubs.get(task.task_id)
    assert events[-1].state == failed.state
    assert failed.state == task_pb2.TASK_STATE_FAILED
    assert "alexnet" in failed.error
