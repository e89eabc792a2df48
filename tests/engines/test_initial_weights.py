"""Starting a training from existing weights: torchvision's pretrained files in the hub
cache, plain state dicts and earlier tasks' artifacts, loaded into freshly built models
from real files; and what is refused (code, damage, other architectures)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from engines import catalogue
from engines.artifacts import save_artifact
from engines.initial_weights import WeightsReport, head_parameter_names, load_initial_weights
from engines.jobs import InitialWeights, JobError
from engines.model_table import PRETRAINED_WEIGHTS
from engines.pretrained import (
    UnknownWeights,
    hub_checkpoints_dir,
    missing_file_problem,
    resolve,
)
from engines.zoo import build_model

SIZE = 32  # small: nothing here runs a model on full-size images


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Copies and builds only; extra OpenMP threads just contend with other tests.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _state_dict_file(path: Path, description: str = "a test file") -> InitialWeights:
    return InitialWeights(kind="state_dict", path=str(path), description=description)


def _file_tensors(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def _assert_loaded_exactly(
    model: torch.nn.Module, report: WeightsReport, file: dict[str, torch.Tensor]
) -> None:
    state = model.state_dict()
    assert set(report.loaded) == set(state) - set(report.new)
    for key in report.loaded:
        assert torch.equal(state[key], file[key]), key


# --- torchvision layouts ----------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1,000-class resnet18's state dict, as torchvision's weights files hold one."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    return _save(torchvision.models.resnet18().state_dict(), path)


def test_a_torchvision_state_dict_loads_with_the_head_sized_anew(resnet18_file: Path) -> None:
    model = build_model("resnet18", 3, SIZE)
    head = ("fc.weight", "fc.bias")
    fresh = {key: model.state_dict()[key].clone() for key in head}

    report = load_initial_weights(model, "resnet18", _state_dict_file(resnet18_file, "r18"))

    assert report.new == head
    state = model.state_dict()
    assert state["fc.weight"].shape == (3, 512) and state["fc.bias"].shape == (3,)
    assert all(torch.equal(state[key], fresh[key]) for key in head)
    _assert_loaded_exactly(model, report, _file_tensors(resnet18_file))
    total = len(model.state_dict())
    assert report.sentence() == (
        f"started from r18: loaded {total - 2} of {total} tensors; "
        "new (sized to 3 classes): fc.weight, fc.bias"
    )


def test_a_file_for_as_many_classes_loads_whole(resnet18_file: Path) -> None:
    model = build_model("resnet18", 1000, SIZE)
    report = load_initial_weights(model, "resnet18", _state_dict_file(resnet18_file))
    assert report.new == ()
    _assert_loaded_exactly(model, report, _file_tensors(resnet18_file))
    assert "new" not in report.sentence()


def test_wrapped_and_data_parallel_state_dicts_load(resnet18_file: Path, tmp_path: Path) -> None:
    file = _file_tensors(resnet18_file)
    wrapped = {"epoch": 3, "model": {f"module.{key}": value for key, value in file.items()}}
    path = _save(wrapped, tmp_path / "checkpoint.pt")
    model = build_model("resnet18", 3, SIZE)
    report = load_initial_weights(model, "resnet18", _state_dict_file(path))
    assert report.new == ("fc.weight", "fc.bias")
    _assert_loaded_exactly(model, report, file)


def test_torchvision_aux_classifiers_are_skipped(tmp_path: Path) -> None:
    # torchvision's googlenet weights carry aux1/aux2; zoo builds googlenet without them.
    source = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    path = _save(source.state_dict(), tmp_path / "googlenet.pth")
    model = build_model("googlenet", 3, SIZE)
    report = load_initial_weights(model, "googlenet", _state_dict_file(path))
    assert report.new == ("fc.weight", "fc.bias")
    _assert_loaded_exactly(model, report, _file_tensors(path))


def test_densenet_files_in_the_old_layout_load(tmp_path: Path) -> None:
    # torchvision's densenet files name `norm1` as `norm.1`, and so on.
    old = {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key): value
        for key, value in torchvision.models.densenet121().state_dict().items()
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    path = _save(old, tmp_path / "densenet121.pth")
    model = build_model("densenet121", 3, SIZE)
    report = load_initial_weights(model, "densenet121", _state_dict_file(path))
    assert report.new == ("classifier.weight", "classifier.bias")
    state = model.state_dict()
    assert torch.equal(
        state["features.denseblock1.denselayer1.norm1.weight"],
        old["features.denseblock1.denselayer1.norm.1.weight"],
    )


def test_a_plain_mnasnet_state_dict_loads(tmp_path: Path) -> None:
    # mnasnet's own load_state_dict hook refuses a dict without version metadata.
    path = _save(dict(torchvision.models.mnasnet0_5().state_dict()), tmp_path / "mnasnet.pth")
    model = build_model("mnasnet0_5", 3, SIZE)
    report = load_initial_weights(model, "mnasnet0_5", _state_dict_file(path))
    assert report.new == ("classifier.1.weight", "classifier.1.bias")
    _assert_loaded_exactly(model, report, _file_tensors(path))


# --- pretrained weights from the hub cache ------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"TORCH_HOME": "{tmp}/torch-home"},
        {"TORCH_HOME": "{tmp}/torch-home", "XDG_CACHE_HOME": "{tmp}/xdg"},
        {"XDG_CACHE_HOME": "{tmp}/xdg"},
        {"HOME": "{tmp}/home"},
        {"TORCH_HOME": "~/th", "HOME": "{tmp}/home"},
    ],
)
def test_the_hub_dir_is_torchs(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    assert hub_checkpoints_dir() == Path(torch.hub.get_dir(), "checkpoints")


def test_pretrained_weights_come_from_the_hub_cache_only(
    resnet18_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = resolve("resnet18", "DEFAULT")
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    assert weights.member == "IMAGENET1K_V1"
    assert weights.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert weights.path == checkpoints / weights.file_name == checkpoints / "resnet18-f37072fd.pth"

    problem = missing_file_problem(weights)
    assert problem is not None
    for part in ("resnet18-f37072fd.pth", str(checkpoints), weights.url, "TORCH_HOME"):
        assert part in problem

    checkpoints.mkdir(parents=True)
    os.link(resnet18_file, weights.path)
    assert missing_file_problem(weights) is None
    model = build_model("resnet18", 3, SIZE)
    source = InitialWeights(
        kind="pretrained",
        path=str(weights.path),
        description="torchvision resnet18 IMAGENET1K_V1 weights",
    )
    report = load_initial_weights(model, "resnet18", source)
    assert report.new == ("fc.weight", "fc.bias")
    _assert_loaded_exactly(model, report, _file_tensors(resnet18_file))
    assert report.sentence().startswith("started from torchvision resnet18 IMAGENET1K_V1 weights")


def test_weights_names_are_matched_in_any_case() -> None:
    assert resolve("resnet50", "default").member == "IMAGENET1K_V2"
    assert resolve("resnet50", "imagenet1k_v1").member == "IMAGENET1K_V1"
    assert resolve("resnet50", "imagenet1k_v1").name == "imagenet1k_v1"


def test_an_unknown_weights_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownWeights) as caught:
        resolve("resnet50", "IMAGENET1K_V3")
    assert str(caught.value) == (
        "model resnet50 has no pretrained weights named 'IMAGENET1K_V3': "
        "choose DEFAULT (IMAGENET1K_V2), IMAGENET1K_V1 or IMAGENET1K_V2"
    )


_WITHOUT_WEIGHTS = sorted(name for name, members in PRETRAINED_WEIGHTS.items() if not members)


@pytest.mark.parametrize("model", [*_WITHOUT_WEIGHTS[:1], "not_a_model"])
def test_a_model_without_weights_says_so(model: str) -> None:
    with pytest.raises(UnknownWeights, match=f"no pretrained weights for model '{model}'"):
        resolve(model, "DEFAULT")


# --- artifacts ----------------------------------------------------------------------------


def _artifact(path: Path, architecture: str, classes: list[str]) -> Path:
    save_artifact(
        str(path),
        model=build_model(architecture, len(classes), SIZE),
        architecture=architecture,
        classes=classes,
        image_size=SIZE,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        epoch=2,
        metrics={"val_accuracy": 0.5},
    )
    return path


def test_an_artifact_with_other_classes_loads_with_a_new_head(tmp_path: Path) -> None:
    path = _artifact(tmp_path / "model.pt", "resnet18", ["a", "b", "c", "d", "e"])
    model = build_model("resnet18", 3, SIZE)
    source = InitialWeights(kind="artifact", path=str(path), description="task 3f2a's model")
    report = load_initial_weights(model, "resnet18", source)
    assert report.new == ("fc.weight", "fc.bias")
    file: dict[str, torch.Tensor] = torch.load(path, weights_only=True)["state_dict"]
    _assert_loaded_exactly(model, report, file)


def test_an_artifact_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = _artifact(tmp_path / "model.pt", "mobilenet_v3_small", ["a", "b"])
    source = InitialWeights(kind="artifact", path=str(path), description="task 3f2a's model")
    with pytest.raises(JobError) as caught:
        load_initial_weights(build_model("resnet18", 2, SIZE), "resnet18", source)
    assert str(caught.value) == (
        "cannot start from task 3f2a's model: it is a mobilenet_v3_small "
        "and this task trains a resnet18"
    )


def test_a_missing_artifact_is_refused(tmp_path: Path) -> None:
    source = InitialWeights(kind="artifact", path=str(tmp_path / "gone.pt"), description="t")
    with pytest.raises(JobError, match="does not exist"):
        load_initial_weights(build_model("resnet18", 2, SIZE), "resnet18", source)


# --- refusals -----------------------------------------------------------------------------


class Payload:
    """Pickles as a call to os.mkdir: loading the file must not make the folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


class Plain:
    """An ordinary class instance: not a tensor, so not loaded either."""


def test_a_file_that_carries_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = _save({"fc.weight": torch.zeros(1), "x": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(JobError) as caught:
        load_initial_weights(build_model("resnet18", 2, SIZE), "resnet18", _state_dict_file(path))
    assert not marker.exists()
    assert "holds code or objects other than tensors (posix.mkdir)" in str(caught.value)


def test_a_file_holding_a_class_instance_is_refused(tmp_path: Path) -> None:
    path = _save({"fc.weight": torch.zeros(1), "x": Plain()}, tmp_path / "instance.pth")
    with pytest.raises(JobError, match=r"holds code or objects other than tensors \(.*Plain\)"):
        load_initial_weights(build_model("resnet18", 2, SIZE), "resnet18", _state_dict_file(path))


def test_a_truncated_file_is_refused(resnet18_file: Path, tmp_path: Path) -> None:
    data = resnet18_file.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(JobError, match=f"{path} is damaged or not a PyTorch weights file"):
        load_initial_weights(build_model("resnet18", 2, SIZE), "resnet18", _state_dict_file(path))


def test_a_file_without_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = _save({"epoch": 3, "lr": 0.1}, tmp_path / "notes.pth")
    with pytest.raises(JobError, match="is not a state dict"):
        load_initial_weights(build_model("resnet18", 2, SIZE), "resnet18", _state_dict_file(path))


def test_weights_of_a_deeper_resnet_are_refused(tmp_path: Path) -> None:
    # resnet18's tensors are a subset of resnet34's, all of the same shape: only the
    # file's extra blocks show the mismatch.
    path = _save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(JobError) as caught:
        load_initial_weights(
            build_model("resnet18", 3, SIZE), "resnet18", _state_dict_file(path, "r34")
        )
    message = str(caught.value)
    assert message.startswith("r34 does not fit a resnet18 with 3 classes: the file has ")
    assert "tensors the model lacks (layer1.2.conv1.weight, " in message
    assert message.count(",") < 10  # a few names, not hundreds


def test_weights_of_a_shallower_resnet_are_refused(resnet18_file: Path) -> None:
    with pytest.raises(JobError, match=r"the file lacks \d+ of the model's tensors \(layer1\.2\."):
        load_initial_weights(
            build_model("resnet34", 3, SIZE), "resnet34", _state_dict_file(resnet18_file)
        )


def test_weights_of_another_family_are_refused(tmp_path: Path) -> None:
    path = _save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "m.pth")
    with pytest.raises(JobError, match=r"none of the file's \d+ tensors match .* another model"):
        load_initial_weights(build_model("resnet18", 3, SIZE), "resnet18", _state_dict_file(path))


def test_a_vit_for_another_image_size_is_refused(tmp_path: Path) -> None:
    # ViT's position embeddings are sized by the image: 64 px is 4 patches and a class token.
    model = build_model("vit_b_32", 3, 32)
    state = dict(model.state_dict())
    state["encoder.pos_embedding"] = torch.zeros(1, 5, 768)
    path = _save(state, tmp_path / "vit.pth")
    with pytest.raises(JobError) as caught:
        load_initial_weights(model, "vit_b_32", _state_dict_file(path))
    assert str(caught.value) == (
        "a test file does not fit a vit_b_32 with 3 classes: 1 of the model's tensors have "
        "another shape in the file (encoder.pos_embedding (file [1, 5, 768], model [1, 2, 768]))"
    )


def test_weights_holding_nan_are_refused(resnet18_file: Path, tmp_path: Path) -> None:
    state = _file_tensors(resnet18_file)
    state["layer4.1.conv2.weight"][0, 0, 0, 0] = float("nan")
    path = _save(state, tmp_path / "diverged.pth")
    with pytest.raises(JobError, match=r"1 of its tensors hold NaN .*\(layer4\.1\.conv2\.weight\)"):
        load_initial_weights(build_model("resnet18", 3, SIZE), "resnet18", _state_dict_file(path))


# --- the classifier head ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("resnet18", "fc"),
        ("mobilenet_v3_small", "classifier.3"),
        ("efficientnet_b0", "classifier.1"),
        ("squeezenet1_0", "classifier.1"),
        ("vit_b_16", "heads.head"),
        ("densenet121", "classifier"),
        ("convnext_tiny", "classifier.2"),
    ],
)
def test_the_head_is_the_classifiers_final_layer(name: str, head: str) -> None:
    with torch.device("meta"):
        model = build_model(name, 7, 224)
    assert head_parameter_names(model) == {f"{head}.weight", f"{head}.bias"}


# One model of each family; the test below fails when torchvision adds a family.
FAMILIES = [
    "alexnet",
    "convnext_tiny",
    "densenet121",
    "efficientnet_v2_s",
    "googlenet",
    "inception_v3",
    "maxvit_t",
    "mnasnet0_5",
    "mobilenet_v2",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "resnext50_32x4d",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "swin_t",
    "swin_v2_t",
    "vgg11_bn",
    "vit_b_32",
    "wide_resnet50_2",
]


def _family(name: str) -> str:
    return re.split(r"[_\d]", name)[0]


def test_every_family_is_checked() -> None:
    known = {_family(name) for name in catalogue.classification_models()}
    checked = {_family(name) for name in FAMILIES} | {"resnet", "vit"}
    assert known <= checked


@pytest.mark.parametrize("name", FAMILIES)
def test_the_head_is_the_only_layer_sized_by_the_classes(name: str) -> None:
    try:
        with torch.device("meta"):
            model = build_model(name, 7, 224)
    except (NotImplementedError, RuntimeError):
        # regnet computes its widths with real tensors.
        model = build_model(name, 7, 224)
    sized_by_classes = {
        f"{module_name}.{param_name}"
        for module_name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and module.weight.shape[0] == 7
        for param_name, _ in module.named_parameters(recurse=False)
    }
    assert head_parameter_names(model) == sized_by_classes != set()
