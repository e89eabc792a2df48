"""Export to ONNX and TorchScript: the files answer as PyTorch does (checked again here,
independently of the export's own check, at yet another batch size), carry the model's
description, are written whole, and bad model files are refused without running them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime  # type: ignore[import-untyped]
import pytest
import torch

from engines import export
from engines.artifacts import load_artifact
from engines.export import ExportError, check_images, export_model
from tests.harness.models import write_foreign_models, write_model

CLASSES = ["cat", "dog", "fish"]
# Neither the export's example batch nor its check's: a third size.
BATCH = 5
assert BATCH not in (export.EXAMPLE_BATCH, export.CHECK_BATCH)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # resnet18: its logits are not all near zero at random init (mobilenet_v3_small's
    # are, which would make any export look exact), and it exports in about 2 s.
    return write_model(tmp_path_factory.mktemp("model") / "model.pt", "resnet18", CLASSES, 32)


def pytorch_logits(model_file: Path, images: torch.Tensor) -> np.ndarray:
    model = load_artifact(str(model_file)).build_model()
    with torch.no_grad():
        logits: np.ndarray = model(images).numpy()
    return logits


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_onnx_answers_as_pytorch_at_any_batch_size(model_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "model.onnx"
    result = export_model(str(model_file), "onnx", str(output), threads=2)

    assert result.path == str(output) and result.size_bytes == output.stat().st_size
    assert result.opset == export.ONNX_OPSET >= 17
    assert 0 <= result.max_abs_diff <= export.TOLERANCE
    proto = onnx.load(str(output))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 32, 32]
    described = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert described["tandem.classes"] == CLASSES
    assert described["tandem.mean"] == [0.5] * 3 and described["tandem.std"] == [0.25] * 3

    artifact = load_artifact(str(model_file))
    images = check_images(artifact, BATCH)
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    (logits,) = session.run(["logits"], {"images": images.numpy()})
    assert logits.shape == (BATCH, len(CLASSES))
    assert np.abs(logits - pytorch_logits(model_file, images)).max() <= 1e-4
    assert leftovers(output.parent) == []


def test_torchscript_answers_as_pytorch_and_exporting_again_replaces_it(
    model_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / "model.torchscript.pt"
    first = export_model(str(model_file), "torchscript", str(output))
    inode = output.stat().st_ino
    again = export_model(str(model_file), "torchscript", str(output))

    assert first.opset == again.opset == 0
    assert again.max_abs_diff <= export.TOLERANCE
    # Replaced by a rename, never rewritten in place: a reader sees one file or the other.
    assert output.stat().st_ino != inode
    extra = {"tandem.json": ""}
    loaded = torch.jit.load(str(output), _extra_files=extra)  # type: ignore[no-untyped-call]
    assert json.loads(extra["tandem.json"])["tandem.classes"] == CLASSES
    images = check_images(load_artifact(str(model_file)), BATCH)
    with torch.no_grad():
        logits = loaded(images).numpy()
    assert np.abs(logits - pytorch_logits(model_file, images)).max() <= 1e-4
    assert leftovers(tmp_path) == []


def test_an_export_that_fails_its_check_leaves_no_file(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No real export differs by more than the tolerance, so the test asks for exactness,
    # which float32 through onnxruntime does not give.
    monkeypatch.setattr(export, "TOLERANCE", 0.0)
    output = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"differs from PyTorch by .* nothing was written"):
        export_model(str(model_file), "onnx", str(output))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_files_that_are_not_tandem_models_are_refused_and_never_run(
    tmp_path: Path, fmt: str
) -> None:
    marker = tmp_path / "marker"
    for name, path in write_foreign_models(tmp_path / "in", marker).items():
        output = tmp_path / "out" / f"{name}.{fmt}"
        with pytest.raises(ExportError) as refused:
            export_model(str(path), fmt, str(output))
        assert refused.value.kind == "model", name
        assert str(path) in str(refused.value)
        assert not output.exists()
    assert not marker.exists()
