"""Model artifacts: a round trip, and files that must be refused without running them."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from engines.artifact_info import read_info
from engines.artifacts import ArtifactError, load_artifact, save_artifact
from engines.zoo import build_model

# The worker's loader and the server's torch-free reader of a model file refuse the same
# bad files in the same words: every refusal test runs against both.
Reader = Callable[[str], object]
READERS = pytest.mark.parametrize("read", [load_artifact, read_info], ids=["worker", "server"])

CLASSES = ["cat", "dog", "fish"]


def save_small(path: Path, model: torch.nn.Module | None = None, **changes: Any) -> torch.nn.Module:
    model = model or build_model("squeezenet1_1", len(CLASSES), 32)
    fields: dict[str, Any] = {
        "model": model,
        "architecture": "squeezenet1_1",
        "classes": CLASSES,
        "image_size": 32,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "epoch": 3,
        "metrics": {"loss": 0.5, "val_accuracy": 0.75},
    }
    save_artifact(str(path), **{**fields, **changes})
    return model


def test_a_saved_model_loads_back_and_predicts_the_same(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "model.pt"
    model = save_small(path).eval()

    artifact = load_artifact(str(path))

    assert artifact.architecture == "squeezenet1_1"
    assert artifact.classes == tuple(CLASSES) and artifact.num_classes == 3
    assert (artifact.image_size, artifact.epoch) == (32, 3)
    assert artifact.mean == (0.5, 0.5, 0.5) and artifact.std == (0.25, 0.25, 0.25)
    assert artifact.metrics == {"loss": 0.5, "val_accuracy": 0.75}
    assert artifact.optimizer_state is None
    rebuilt = artifact.build_model()
    assert not rebuilt.training
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), model(images))
    # Nothing is left behind by the atomic write.
    assert os.listdir(path.parent) == ["model.pt"]


def test_optimizer_state_survives_the_safe_loader(tmp_path: Path) -> None:
    model = build_model("squeezenet1_1", len(CLASSES), 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pt"
    save_small(path, model, optimizer_state=optimizer.state_dict())

    state = load_artifact(str(path)).optimizer_state

    assert state is not None
    resumed = torch.optim.Adam(model.parameters(), lr=1e-3)
    resumed.load_state_dict(dict(state))
    assert resumed.state_dict()["param_groups"][0]["lr"] == 1e-3


def test_saving_again_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_small(path, epoch=1)
    save_small(path, epoch=2)
    assert load_artifact(str(path)).epoch == 2
    assert os.listdir(tmp_path) == ["model.pt"]


class Payload:
    """Unpickling this runs `touch marker`: what a malicious model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@READERS
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_file_carrying_code_is_refused_and_never_run(
    tmp_path: Path, writer: str, read: Reader
) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = {"format": "tandem.model", "version": 1, "state_dict": Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)

    with pytest.raises(ArtifactError, match="holds code rather than weights"):
        read(str(path))
    assert not marker.exists()


class Model:
    """A pickled class instance: loading it would need to import this module."""

    def __init__(self) -> None:
        self.weights = [1.0, 2.0]


@READERS
def test_a_pickled_object_is_refused(tmp_path: Path, read: Reader) -> None:
    path = tmp_path / "object.pt"
    torch.save(Model(), path)
    with pytest.raises(ArtifactError, match="cannot load model file"):
        read(str(path))


@pytest.mark.parametrize(
    "content",
    [b"", b"not a model at all\n" * 10, b"PK\x03\x04 truncated zip"],
    ids=["empty", "text", "truncated"],
)
@READERS
def test_junk_is_refused(tmp_path: Path, content: bytes, read: Reader) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match="cannot load model file"):
        read(str(path))


def test_a_bare_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(build_model("squeezenet1_1", 3, 32).state_dict(), path)
    with pytest.raises(ArtifactError, match="is not a Tandem model file"):
        load_artifact(str(path))


def test_a_missing_file_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(str(tmp_path / "nothing.pt"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 2}, "format version 2"),
        ({"classes": "cat"}, "classes is missing or not a list"),
        ({"mean": [0.5]}, "invalid mean"),
        ({"state_dict": {"weight": [1.0]}}, "state_dict is not a table of tensors"),
    ],
)
@READERS
def test_a_damaged_artifact_is_refused(
    tmp_path: Path, changes: dict[str, Any], message: str, read: Reader
) -> None:
    # The worker's loader and the server's torch-free reader refuse it in the same words.
    path = tmp_path / "model.pt"
    save_small(path)
    raw = torch.load(path, weights_only=True)
    torch.save({**raw, **changes}, path)
    with pytest.raises(ArtifactError, match=message):
        read(str(path))


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_small(path, model=build_model("squeezenet1_1", 5, 32))  # 5 outputs, 3 classes
    artifact = load_artifact(str(path))
    with pytest.raises(ArtifactError, match="do not fit a squeezenet1_1 with 3 classes"):
        artifact.build_model()


# The server reads an artifact's description without torch (engines.artifact_info): it
# must agree with the worker's loader on good files and refuse the same bad ones.


def test_the_description_reads_without_loading_the_weights(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    model = build_model("squeezenet1_1", len(CLASSES), 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    save_small(path, model, optimizer_state=optimizer.state_dict())

    info, artifact = read_info(str(path)), load_artifact(str(path))

    assert info.architecture == artifact.architecture == "squeezenet1_1"
    assert info.classes == artifact.classes == tuple(CLASSES)
    assert (info.image_size, info.epoch) == (artifact.image_size, artifact.epoch) == (32, 3)
    assert (info.mean, info.std) == (artifact.mean, artifact.std)
    assert info.metrics == artifact.metrics


def test_the_description_reads_from_the_legacy_format_too(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_small(path)
    raw = torch.load(path, weights_only=True)
    torch.save(raw, path, _use_new_zipfile_serialization=False)
    assert read_info(str(path)).classes == load_artifact(str(path)).classes == tuple(CLASSES)


def test_the_description_of_a_bare_state_dict_or_a_missing_file_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(build_model("squeezenet1_1", 3, 32).state_dict(), path)
    with pytest.raises(ArtifactError, match="is not a Tandem model file"):
        read_info(str(path))
    with pytest.raises(ArtifactError, match="does not exist"):
        read_info(str(tmp_path / "nothing.pt"))
    with pytest.raises(ArtifactError, match="is a folder"):
        read_info(str(tmp_path))


def _zip_with_pickle(path: Path, data: bytes) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
    return str(path)


# Keys whose hashes collide (Python's int hash is not salted: n and n + k * (2**61 - 1)
# hash alike), so each insert would scan all before it: minutes of one opcode in C.
_COLLIDING = {k * (2**61 - 1): 0 for k in range(1, 2000)}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ({"format": "tandem.model", "table": _COLLIDING}, "keyed by names or small numbers"),
        ({"format": "tandem.model", "table": {(1, 2): 0}}, "keyed by names or small numbers"),
        ({"format": "tandem.model", "names": {"a", "b"}}, "no sets"),
        ({"format": "tandem.model", "names": frozenset({"a"})}, "no sets"),
    ],
)
def test_the_description_refuses_tables_a_file_could_make_slow(
    tmp_path: Path, content: dict[str, Any], words: str
) -> None:
    path = _zip_with_pickle(tmp_path / "crafted.pt", pickle.dumps(content, protocol=4))
    with pytest.raises(ArtifactError, match=words):
        read_info(path)


def test_the_description_refuses_text_protocol_memo_indices(tmp_path: Path) -> None:
    shared = ["a"]
    data = pickle.dumps({"format": "tandem.model", "x": shared, "y": shared}, protocol=0)
    assert b"p0" in data or b"g0" in data  # protocol 0 memoises with text indices
    with pytest.raises(ArtifactError, match="no sets and no text-protocol memo"):
        read_info(_zip_with_pickle(tmp_path / "text-memo.pt", data))


def test_a_model_whose_modules_are_versioned_loads_back(tmp_path: Path) -> None:
    """mnasnet's batch norm refuses weights without the module versions a saved state
    dict loses; the artifact gives it the freshly built model's."""
    from engines import zoo

    model = zoo.build_model("mnasnet0_5", 3, 32)
    path = tmp_path / "mnasnet.pt"
    save_artifact(
        str(path),
        model=model,
        architecture="mnasnet0_5",
        classes=["a", "b", "c"],
        image_size=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        epoch=1,
        metrics={},
    )
    rebuilt = load_artifact(str(path)).build_model()
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name
