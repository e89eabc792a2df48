"""The model registry through the real gRPC server and real workers: trainings publish
numbered versions of a name, aliases move, a reference (`name`, `name/3`, `name@alias`)
names a model in Infer, Predict, init_from and ExportModel, deletes are refused while a
version is aliased or served, and it all survives a restart. Below those, the registry
on its own over a real SQLite file."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image

from server.event_log import EventLogs
from server.journal import Journal
from server.model_registry import ModelRegistry
from server.records import TaskKind, TaskRecord, TaskState
from server.registry_store import RegistryStore
from server.store import TaskStore
from tandem.v1 import (
    inference_service_pb2,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    resource_service_pb2,
    resources_pb2,
    task_pb2,
    training_service_pb2,
)
from tests.conftest import Stubs, make_config, no_gpus
from tests.harness.models import write_model
from tests.harness.threaded import ServerThread

SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
Code = grpc.StatusCode


def image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server of this module's own: what is in its registry is up to these tests."""
    running = ServerThread(make_config(tmp_path_factory.mktemp("registry")), no_gpus()).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rpc(server: ServerThread) -> Iterator[Stubs]:
    stubs = Stubs.connect(server.port)
    yield stubs
    stubs.channel.close()


@pytest.fixture(scope="module")
def models(rpc: Stubs) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(rpc.channel)


def succeeded(stubs: Stubs, **fields: Any) -> str:
    """A training that ran to SUCCEEDED (mobilenet_v3_small, 32 px, 1 epoch); its id."""
    task = stubs.train(**fields)
    events = stubs.events(task.task_id)
    assert events[-1].state == SUCCEEDED, [e.message for e in events][-4:]
    return str(task.task_id)


@pytest.fixture(scope="module")
def cats(rpc: Stubs) -> tuple[str, str]:
    """Two trainings published as `cats`, one after the other: versions 1 and 2."""
    return succeeded(rpc, model_name="cats"), succeeded(rpc, model_name="cats")


@pytest.fixture(scope="module")
def production(models: model_service_pb2_grpc.ModelServiceStub, cats: tuple[str, str]) -> int:
    """`cats@production` points at version 1 (the older one) for the rest of the module."""
    models.SetModelAlias(
        model_service_pb2.SetModelAliasRequest(name="cats", alias="production", version=1)
    )
    return 1


def get_model(models: model_service_pb2_grpc.ModelServiceStub, name: str) -> model_pb2.Model:
    response = models.GetModel(model_service_pb2.GetModelRequest(name=name))
    model: model_pb2.Model = response.model
    return model


def predict(stubs: Stubs, **fields: Any) -> inference_service_pb2.PredictResponse:
    request = inference_service_pb2.PredictRequest(image=image(), device="cpu", **fields)
    response: inference_service_pb2.PredictResponse = stubs.inference.Predict(request, timeout=60)
    return response


def refused(call: Callable[[Any], Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60)
    return info.value


# -- publishing ------------------------------------------------------------------------


def test_each_succeeded_training_publishes_the_next_version_of_its_name(
    server: ServerThread,
    rpc: Stubs,
    models: model_service_pb2_grpc.ModelServiceStub,
    cats: tuple[str, str],
) -> None:
    model = get_model(models, "cats")

    assert [v.version for v in model.versions] == [1, 2]
    assert [v.task_id for v in model.versions] == list(cats)
    assert model.latest_version == 2 and model.version_count == 2
    assert model.latest == model.versions[-1]
    for version, task_id in zip(model.versions, cats, strict=True):
        task = rpc.get(task_id)
        assert task.training.model_name == "cats"
        assert version.model_path == task.model_path
        assert version.size_bytes == os.path.getsize(task.model_path)
        assert (version.architecture, version.image_size) == ("mobilenet_v3_small", 32)
        assert len(version.classes) >= 2 and version.create_time.seconds > 0
        log = [e.message for e in rpc.events(task_id)]
        assert log[-2] == f"published the model as cats/{version.version}", log[-3:]
    listed = models.ListModels(model_service_pb2.ListModelsRequest()).models
    assert [m.name for m in listed] == ["cats"]
    assert listed[0].latest_version == 2 and list(listed[0].versions) == []


def test_a_failed_training_publishes_nothing(
    rpc: Stubs, models: model_service_pb2_grpc.ModelServiceStub, cats: tuple[str, str]
) -> None:
    # AlexNet's pooling cannot shrink a 16 px image: the task FAILS in its worker.
    task = rpc.train(model="alexnet", image_size=16, model_name="broken")
    events = rpc.events(task.task_id)

    assert events[-1].state == task_pb2.TASK_STATE_FAILED
    assert not any("published" in e.message for e in events)
    error = refused(models.GetModel, model_service_pb2.GetModelRequest(name="broken"))
    assert error.code() is Code.NOT_FOUND
    assert "model 'broken' does not exist; the registry holds cats" in error.details()


# -- aliases and references ------------------------------------------------------------


def test_an_alias_is_created_moved_and_deleted(
    models: model_service_pb2_grpc.ModelServiceStub, cats: tuple[str, str]
) -> None:
    def set_alias(version: int) -> model_service_pb2.SetModelAliasResponse:
        request = model_service_pb2.SetModelAliasRequest(
            name="cats", alias="staging", version=version
        )
        response: model_service_pb2.SetModelAliasResponse = models.SetModelAlias(request)
        return response

    created = set_alias(1)
    assert (created.version.version, created.previous_version) == (1, 0)
    assert "staging" in created.version.aliases
    moved = set_alias(2)
    assert (moved.version.version, moved.previous_version) == (2, 1)
    model = get_model(models, "cats")
    assert model.aliases["staging"] == 2
    assert "staging" not in model.versions[0].aliases and "staging" in model.versions[1].aliases

    deleted = models.DeleteModelAlias(
        model_service_pb2.DeleteModelAliasRequest(name="cats", alias="staging")
    )
    assert deleted.version == 2
    assert "staging" not in get_model(models, "cats").aliases


def test_predict_resolves_every_form_of_reference(
    rpc: Stubs, cats: tuple[str, str], production: int
) -> None:
    answered = {
        reference: predict(rpc, model_name=reference, top_k=1).model_name
        for reference in ("cats", "cats/1", "cats/2", "cats@production", "cats@latest")
    }

    assert answered == {
        "cats": "cats/2",
        "cats/1": "cats/1",
        "cats/2": "cats/2",
        "cats@production": "cats/1",
        "cats@latest": "cats/2",
    }
    by_task = predict(rpc, task_id=cats[0], top_k=3)
    by_alias = predict(rpc, model_name="cats@production", top_k=3)
    assert by_task.model_name == ""
    assert list(by_alias.predictions) == list(by_task.predictions)


def test_infer_by_reference_runs_the_version_it_resolves_to(
    rpc: Stubs, cats: tuple[str, str], production: int
) -> None:
    request = inference_service_pb2.InferRequest(
        model_name="cats@production", dataset="synthetic", device="cpu"
    )
    task = rpc.inference.Infer(request, timeout=30).task

    assert (task.inference.model_name, task.inference.task_id) == ("cats/1", cats[0])
    assert task.inference.model_path == rpc.get(cats[0]).model_path
    assert rpc.events(task.task_id)[-1].state == SUCCEEDED


def test_export_by_reference_writes_beside_the_version_task_model(
    server: ServerThread,
    models: model_service_pb2_grpc.ModelServiceStub,
    cats: tuple[str, str],
    production: int,
) -> None:
    request = model_service_pb2.ExportModelRequest(
        model_name="cats@production", format=model_pb2.EXPORT_FORMAT_TORCHSCRIPT
    )
    answer = models.ExportModel(request, timeout=300)

    assert (answer.model_name, answer.task_id) == ("cats/1", cats[0])
    assert answer.path == str(server.config.task_dir(cats[0]) / "model.torchscript.pt")
    assert answer.max_abs_diff <= 1e-4


def test_init_from_takes_a_reference_and_a_name_in_the_registry_before_a_task_id(
    rpc: Stubs,
    models: model_service_pb2_grpc.ModelServiceStub,
    cats: tuple[str, str],
    production: int,
) -> None:
    # A name that looks like a task id is refused: init_from reads names first.
    with pytest.raises(grpc.RpcError) as refused:
        rpc.train(model="", init_from="cats@production", model_name=cats[1])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "looks like a task id" in (refused.value.details() or "")

    tuned = rpc.train(model="", init_from="cats@production", model_name="cats-tuned")
    assert tuned.training.init_from == "cats/1"
    assert (tuned.training.model, tuned.training.image_size) == ("mobilenet_v3_small", 32)
    log = [e.message for e in rpc.events(tuned.task_id)]
    assert any(f"model cats/1 (task {cats[0]}'s model)" in line for line in log), log[:6]
    assert rpc.get(tuned.task_id).state == SUCCEEDED
    assert get_model(models, "cats-tuned").latest.task_id == tuned.task_id


# -- deleting --------------------------------------------------------------------------


def test_a_version_is_deleted_only_when_no_alias_points_at_it_and_it_is_not_served(
    server: ServerThread,
    rpc: Stubs,
    models: model_service_pb2_grpc.ModelServiceStub,
    cats: tuple[str, str],
    production: int,
) -> None:
    def delete(version: int) -> Any:
        request = model_service_pb2.DeleteModelVersionRequest(name="cats", version=version)
        return models.DeleteModelVersion(request, timeout=30)

    with pytest.raises(grpc.RpcError) as aliased:
        delete(1)
    assert aliased.value.code() is Code.FAILED_PRECONDITION
    assert "version 1 of model 'cats' is aliased ('production')" in aliased.value.details()

    predict(rpc, model_name="cats/2", priority=9)  # now the model server holds it
    with pytest.raises(grpc.RpcError) as served:
        delete(2)
    assert served.value.code() is Code.FAILED_PRECONDITION
    assert "is being served" in served.value.details()

    # A more urgent batch task for the only inference slot unloads the served models.
    limits = resource_service_pb2.UpdateLimitsRequest
    one = resources_pb2.ConcurrencyLimits(inference=1)
    rpc.resources.UpdateLimits(limits(max_concurrent={"cpu": one}))
    try:
        urgent = inference_service_pb2.InferRequest(
            model_name="cats/1", dataset="synthetic", device="cpu", priority=2
        )
        task = rpc.inference.Infer(urgent, timeout=30).task
        assert rpc.events(task.task_id)[-1].state == SUCCEEDED
    finally:
        four = resources_pb2.ConcurrencyLimits(inference=4)
        rpc.resources.UpdateLimits(limits(max_concurrent={"cpu": four}))
    assert server.service is not None
    assert server.call(server.service.model_server.loaded) == []

    gone = delete(2).version
    assert (gone.version, gone.task_id) == (2, cats[1])
    assert os.path.exists(gone.model_path)  # the file belongs to the task
    model = get_model(models, "cats")
    assert [v.version for v in model.versions] == [1] and model.latest_version == 1
    assert predict(rpc, model_name="cats", top_k=1).model_name == "cats/1"


# -- bad input -------------------------------------------------------------------------


def test_every_bad_reference_name_alias_and_version_gets_its_status_and_a_sentence(
    rpc: Stubs, models: model_service_pb2_grpc.ModelServiceStub, cats: tuple[str, str]
) -> None:
    Train = training_service_pb2.TrainRequest
    Predict = inference_service_pb2.PredictRequest
    Infer = inference_service_pb2.InferRequest
    Export = model_service_pb2.ExportModelRequest
    Get = model_service_pb2.GetModelRequest
    SetAlias = model_service_pb2.SetModelAliasRequest
    DeleteAlias = model_service_pb2.DeleteModelAliasRequest
    DeleteVersion = model_service_pb2.DeleteModelVersionRequest
    train = dict(model="mobilenet_v3_small", dataset="synthetic", device="cpu")
    png = image()
    onnx = model_pb2.EXPORT_FORMAT_ONNX
    invalid, missing = Code.INVALID_ARGUMENT, Code.NOT_FOUND
    cases: list[tuple[Callable[..., Any], Any, grpc.StatusCode, str]] = [
        (rpc.training.Train, Train(**train, model_name="Cats"), invalid, "model_name must be"),
        (rpc.training.Train, Train(**train, model_name="a/b"), invalid, "no '/' or '@'"),
        (rpc.training.Train, Train(**train, model_name="c" * 65), invalid, "1 to 64 characters"),
        (rpc.training.Train, Train(**train, init_from="nope"), missing, "neither a model"),
        (rpc.training.Train, Train(**train, init_from="cats/9"), missing, "has no version 9"),
        (rpc.inference.Predict, Predict(image=png, model_name="nope"), missing, "registry holds"),
        (rpc.inference.Predict, Predict(image=png, model_name="cats/9"), missing, "versions"),
        (rpc.inference.Predict, Predict(image=png, model_name="cats@x"), missing, "no alias 'x'"),
        (rpc.inference.Predict, Predict(image=png, model_name="Bad"), invalid, "a name is 1"),
        (rpc.inference.Predict, Predict(image=png, model_name="cats/0"), invalid, "a version"),
        (rpc.inference.Predict, Predict(image=png, model_name="cats@9"), invalid, "an alias"),
        (
            rpc.inference.Predict,
            Predict(image=png, model_name="cats", task_id=cats[0]),
            invalid,
            "give exactly one of task_id",
        ),
        (rpc.inference.Infer, Infer(model_name="nope", dataset="synthetic"), missing, "nope"),
        (models.ExportModel, Export(model_name="cats/9", format=onnx), missing, "no version 9"),
        (models.GetModel, Get(), invalid, "name is required"),
        (models.GetModel, Get(name="nope"), missing, "model 'nope' does not exist"),
        (models.GetModel, Get(name="No Pe"), invalid, "name must be 1 to 64"),
        (models.SetModelAlias, SetAlias(name="cats", alias="latest", version=1), invalid, "not"),
        (models.SetModelAlias, SetAlias(name="cats", alias="9a", version=1), invalid, "letter"),
        (models.SetModelAlias, SetAlias(name="cats", version=1), invalid, "alias is required"),
        (models.SetModelAlias, SetAlias(name="cats", alias="a"), invalid, "version must be"),
        (models.SetModelAlias, SetAlias(name="cats", alias="a", version=9), missing, "no version"),
        (models.SetModelAlias, SetAlias(name="nope", alias="a", version=1), missing, "nope"),
        (models.DeleteModelAlias, DeleteAlias(name="cats", alias="gone"), missing, "no alias"),
        (models.DeleteModelVersion, DeleteVersion(name="cats"), invalid, "version must be"),
        (models.DeleteModelVersion, DeleteVersion(name="cats", version=9), missing, "version 9"),
    ]
    for call, request, code, sentence in cases:
        error = refused(call, request)
        assert (error.code(), sentence in error.details()) == (code, True), (
            request,
            error.details(),
        )


# -- across a restart ------------------------------------------------------------------


def test_names_versions_and_aliases_are_kept_across_a_restart(
    fresh_server: Callable[..., ServerThread],
) -> None:
    first = fresh_server()
    stubs = Stubs.connect(first.port)
    task_id = succeeded(stubs, model_name="birds")
    registry = model_service_pb2_grpc.ModelServiceStub(stubs.channel)
    registry.SetModelAlias(
        model_service_pb2.SetModelAliasRequest(name="birds", alias="production", version=1)
    )
    before = get_model(registry, "birds")
    stubs.channel.close()
    first.stop()

    second = fresh_server()  # the same data dir
    stubs = Stubs.connect(second.port)
    registry = model_service_pb2_grpc.ModelServiceStub(stubs.channel)
    assert get_model(registry, "birds") == before
    assert before.versions[0].task_id == task_id and dict(before.aliases) == {"production": 1}
    assert predict(stubs, model_name="birds@production", top_k=1).model_name == "birds/1"
    stubs.channel.close()


# -- the registry on its own -----------------------------------------------------------


@pytest.fixture
def artifact(tmp_path: Path) -> str:
    return str(write_model(tmp_path / "m.pt", "resnet18", ["cat", "dog"], 16))


def test_numbers_are_never_given_twice_and_a_task_publishes_once(
    tmp_path: Path, artifact: str
) -> None:
    store = RegistryStore(tmp_path / "tandem.db")
    registry = ModelRegistry(store, served_paths=lambda: ())
    assert [registry.publish("cats", task, artifact).version for task in "abc"] == [1, 2, 3]
    registry.delete_version("cats", 3)
    assert registry.publish("cats", "d", artifact).version == 4
    assert registry.publish("cats", "a", artifact).version == 1  # published before
    store.close()

    reopened = ModelRegistry(RegistryStore(tmp_path / "tandem.db"), served_paths=lambda: ())
    assert [v.version for v in reopened.versions("cats")] == [1, 2, 4]
    assert reopened.publish("cats", "e", artifact).version == 5


def test_a_model_that_cannot_be_published_leaves_its_task_succeeded_and_says_why(
    tmp_path: Path,
) -> None:
    tasks = TaskStore(tmp_path / "tandem.db")
    journal = Journal(tasks, EventLogs(tmp_path / "tasks"))
    registry = ModelRegistry(RegistryStore(tmp_path / "tandem.db"), served_paths=lambda: ())
    task = TaskRecord(
        task_id="t1",
        kind=TaskKind.TRAINING,
        state=TaskState.RUNNING,
        priority=5,
        device="cpu",
        params={"model_name": "cats"},
        create_time=time.time(),
        model_path=str(tmp_path / "missing.pt"),
    )

    registry.publish_model_of(task, journal)  # does not raise

    last = journal.logs.open("t1").events[-1]
    assert last.level == "warning"
    assert last.message.startswith("could not publish the model as 'cats': ")
    assert "still usable by task_id" in last.message
    assert registry.names() == [] and task.state is TaskState.RUNNING
