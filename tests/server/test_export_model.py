"""`tandem.v1.ModelService/ExportModel` against a real server: exports by task and by
path land where they should and check out, bad requests get their status and sentence,
and the export process never outlives its call."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime  # type: ignore[import-untyped]
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.errors import ServiceError
from server.exports import Exporter
from tandem.contract import EXPORT_FORMATS
from tandem.v1 import model_pb2, model_service_pb2, model_service_pb2_grpc, task_pb2
from tests.conftest import Stubs
from tests.harness.models import write_foreign_models, write_model
from tests.harness.threaded import ServerThread

ONNX = model_pb2.EXPORT_FORMAT_ONNX
TORCHSCRIPT = model_pb2.EXPORT_FORMAT_TORCHSCRIPT
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def models(shared_server: ServerThread) -> Iterator[model_service_pb2_grpc.ModelServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{shared_server.port}")
    yield model_service_pb2_grpc.ModelServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def trained(stubs: Stubs) -> str:
    """A SUCCEEDED training task: resnet18 at 16 px, the quickest to train and export."""
    task = stubs.train(model="resnet18", image_size=16, batch_size=32, val_split=0.0)
    assert stubs.events(task.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    return str(task.task_id)


def export(
    models: model_service_pb2_grpc.ModelServiceStub, **fields: object
) -> model_service_pb2.ExportModelResponse:
    request = model_service_pb2.ExportModelRequest(**fields)  # type: ignore[arg-type]
    response: model_service_pb2.ExportModelResponse = models.ExportModel(request, timeout=300)
    return response


def refused(models: model_service_pb2_grpc.ModelServiceStub, **fields: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        export(models, **fields)
    return error.value


def test_a_task_model_exports_to_onnx_beside_it(
    shared_server: ServerThread, models: model_service_pb2_grpc.ModelServiceStub, trained: str
) -> None:
    answer = export(models, task_id=trained, format=ONNX)

    task_dir = shared_server.config.task_dir(trained)
    assert answer.path == str(task_dir / "model.onnx")
    assert answer.model_path == str(task_dir / "model.pt") and answer.task_id == trained
    assert answer.format == ONNX and answer.opset >= 17
    assert answer.size_bytes == os.path.getsize(answer.path) > 0
    assert 0 <= answer.max_abs_diff <= 1e-4
    session = onnxruntime.InferenceSession(answer.path, providers=["CPUExecutionProvider"])
    images = np.zeros((4, 3, 16, 16), dtype=np.float32)
    (logits,) = session.run(["logits"], {"images": images})
    assert logits.shape[0] == 4
    assert [p.name for p in task_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_a_model_file_exports_under_the_data_dir(
    shared_server: ServerThread, models: model_service_pb2_grpc.ModelServiceStub
) -> None:
    data = shared_server.config.data_dir
    source = write_model(data / "shelf" / "cats.pt", "resnet18", ["cat", "lynx"], 16)

    # Relative paths resolve under the first model root, the data dir.
    answer = export(models, model_path="shelf/cats.pt", format=TORCHSCRIPT)

    path = Path(answer.path)
    assert path.parent == data / "exports"
    assert path.name.startswith("cats-") and path.name.endswith(".torchscript.pt")
    assert answer.task_id == "" and answer.model_path == str(source)
    assert answer.opset == 0 and answer.max_abs_diff <= 1e-4
    assert answer.size_bytes == path.stat().st_size


def test_bad_requests_get_their_status_and_a_sentence(
    shared_server: ServerThread, models: model_service_pb2_grpc.ModelServiceStub, trained: str
) -> None:
    cases: list[tuple[dict[str, object], grpc.StatusCode, str]] = [
        ({"task_id": trained}, Code.INVALID_ARGUMENT, "format is required"),
        ({"task_id": trained, "format": 7}, Code.INVALID_ARGUMENT, "format 7 is not one"),
        ({"task_id": "nope", "format": ONNX}, Code.NOT_FOUND, "task 'nope' does not exist"),
        ({"format": ONNX}, Code.INVALID_ARGUMENT, "give exactly one of task_id"),
        ({"task_id": trained, "model_path": "x.pt", "format": ONNX}, Code.INVALID_ARGUMENT, ""),
        ({"model_path": "/etc/passwd", "format": ONNX}, Code.PERMISSION_DENIED, "outside"),
    ]
    for fields, code, sentence in cases:
        error = refused(models, **fields)
        assert (error.code(), sentence in error.details()) == (code, True), (fields, error)


def test_files_that_are_not_tandem_models_are_refused_as_predict_refuses_them(
    shared_server: ServerThread, models: model_service_pb2_grpc.ModelServiceStub
) -> None:
    data = shared_server.config.data_dir
    marker = data / "marker"
    for name, path in write_foreign_models(data / "foreign", marker).items():
        for fmt in (ONNX, TORCHSCRIPT):
            error = refused(models, model_path=str(path), format=fmt)
            assert error.code() is Code.INVALID_ARGUMENT, (name, error)
            assert "is not a usable Tandem model" in error.details()
    assert not marker.exists()
    written = [p.name for p in (data / "exports").glob("*")]
    assert not [name for name in written if name.startswith(("damaged", "state_dict", "runs_"))]


def test_the_service_is_served_reflected_and_healthy(shared_server: ServerThread) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{shared_server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service="tandem.v1.ModelService"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_exports_need_the_token(fresh_server: Callable[..., ServerThread]) -> None:
    server = fresh_server(auth_token="s3cret", prewarm_workers=0)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        error = refused(stub, task_id="x", format=ONNX)
        assert error.code() is Code.UNAUTHENTICATED
        with_token = (("authorization", "Bearer s3cret"),)
        request = model_service_pb2.ExportModelRequest(task_id="x", format=ONNX)
        with pytest.raises(grpc.RpcError) as found:
            stub.ExportModel(request, metadata=with_token, timeout=30)
        assert found.value.code() is Code.NOT_FOUND


def test_the_formats_of_the_contract_are_those_of_the_proto() -> None:
    named = [v.name for v in model_pb2.ExportFormat.DESCRIPTOR.values if v.number]
    assert [n.removeprefix("EXPORT_FORMAT_").lower() for n in named] == list(EXPORT_FORMATS)


# -- the export process ---------------------------------------------------------------


def _children() -> set[int]:
    """This process's child processes now (the export runs as one)."""
    own = os.getpid()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == own:
                found.add(int(entry.name))
    return found


def test_an_export_past_its_time_is_killed_and_cleaned_up(tmp_path: Path) -> None:
    source = write_model(tmp_path / "model.pt", "resnet18", ["a", "b"], 16)
    output = tmp_path / "out" / "model.onnx"
    output.parent.mkdir()
    # What a process killed while writing leaves behind.
    (output.parent / ".model.onnx.0123abcd.tmp").write_bytes(b"half a file")
    before = _children()

    async def run() -> None:
        await Exporter(timeout_s=0.2).export(str(source), "onnx", output)

    with pytest.raises(ServiceError) as late:
        asyncio.run(run())
    assert late.value.code is Code.DEADLINE_EXCEEDED
    assert "did not finish within 0.2 s" in late.value.message
    assert list(output.parent.iterdir()) == []
    assert _children() <= before


def test_a_cancelled_export_kills_its_process(tmp_path: Path) -> None:
    source = write_model(tmp_path / "model.pt", "resnet18", ["a", "b"], 16)
    before = _children()

    async def run() -> None:
        exporting = asyncio.create_task(Exporter().export(str(source), "onnx", tmp_path / "m.onnx"))
        # Once its process runs, cancelled as gRPC cancels a call whose client left.
        deadline = asyncio.get_running_loop().time() + 30
        while not _children() - before:
            assert asyncio.get_running_loop().time() < deadline, "no export process started"
            await asyncio.sleep(0.01)
        exporting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await exporting

    asyncio.run(run())
    assert _children() <= before
    assert not (tmp_path / "m.onnx").exists()
