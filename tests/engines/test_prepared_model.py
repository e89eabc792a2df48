"""Preparing a network for answering (`engines.prepared_model`): batch norm folded and
channels-last where the answers stay the same, the network as built where they would not,
and nothing claimed that was not done."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from engines import zoo
from engines.artifacts import load_artifact
from engines.predict import Predictor
from engines.prepared_model import TOLERANCE, prepare_for_inference
from tests.engines.test_predict import png, write_model

CPU = torch.device("cpu")
META = torch.device("meta")
SIZE = 16


class Flattening(nn.Module):
    """conv -> bn -> `view`: foldable, but `view` refuses a channels-last tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * SIZE * SIZE, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.head(x.view(x.shape[0], -1))


class Plain(nn.Module):
    """conv -> relu -> linear: fx traces it, but there is no batch norm to fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class Branching(Flattening):
    """`Flattening` with a branch on the data: fx cannot trace it, so nothing is folded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if x.sum() > 0:
            x = x * 2
        return self.head(x.view(x.shape[0], -1))


def builder(cls: type[nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        model = cls()
        model.train()
        with torch.no_grad():  # move the running statistics off their initial values
            model(torch.randn(8, 3, SIZE, SIZE) * 2 + 0.5)
        return model.eval()

    return build


def batch_norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def answers(module: nn.Module, memory_format: torch.memory_format) -> torch.Tensor:
    x = torch.randn(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        return module(x.contiguous(memory_format=memory_format))


def test_a_resnet_is_folded_and_channels_last_with_the_same_answers() -> None:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return zoo.build_model("resnet18", 3, SIZE).eval()

    model = build()
    prepared = prepare_for_inference(model, CPU, SIZE)
    assert prepared.folded and prepared.channels_last
    assert batch_norms(build()) == 20 and batch_norms(prepared.module) == 0
    assert prepared.describe() == "batch norm folded into convolutions and channels-last"
    expected = answers(build(), torch.contiguous_format)
    got = answers(prepared.module, prepared.memory_format)
    assert torch.allclose(got, expected, rtol=0, atol=TOLERANCE)
    # Folding copied what it folded: the network handed in still answers as built.
    assert batch_norms(model) == 20
    assert torch.equal(answers(model, torch.contiguous_format), expected)


def test_a_network_without_batch_norm_is_not_called_folded() -> None:
    model = builder(Plain)()
    prepared = prepare_for_inference(model, CPU, SIZE)
    assert not prepared.folded and prepared.module is model
    assert prepared.describe() == "channels-last"


def test_a_layer_that_minds_the_layout_keeps_nchw_but_is_still_folded() -> None:
    prepared = prepare_for_inference(builder(Flattening)(), CPU, SIZE)
    assert prepared.folded and not prepared.channels_last
    assert batch_norms(prepared.module) == 0
    expected = answers(builder(Flattening)(), torch.contiguous_format)
    assert torch.allclose(answers(prepared.module, prepared.memory_format), expected, atol=1e-5)


def test_an_untraceable_network_that_minds_the_layout_is_served_as_built() -> None:
    prepared = prepare_for_inference(builder(Branching)(), CPU, SIZE)
    assert not prepared.folded and not prepared.channels_last
    assert prepared.describe() == "as built"
    assert batch_norms(prepared.module) == 1 and type(prepared.module) is Branching
    # The weights are back in NCHW and the answers are the built network's, exactly.
    assert prepared.module.conv.weight.is_contiguous()
    expected = answers(builder(Branching)(), torch.contiguous_format)
    assert torch.equal(answers(prepared.module, torch.contiguous_format), expected)


@pytest.mark.parametrize("architecture", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5"])
def test_a_prepared_predictor_answers_as_the_network_as_built(
    tmp_path: Path, architecture: str
) -> None:
    artifact = load_artifact(str(write_model(tmp_path / "model.pt", architecture)))
    prepared, built = Predictor(artifact, "cpu"), Predictor(artifact, "cpu", prepare=False)
    assert prepared.preparation.folded and not built.preparation.folded
    images = [png(seed) for seed in range(4)]
    fast, fast_vectors = prepared.answer_images(images, 3, probabilities=True)
    slow, slow_vectors = built.answer_images(images, 3, probabilities=True)
    for a, b in zip(fast, slow, strict=True):
        assert isinstance(a, list) and isinstance(b, list)
        assert [p.index for p in a] == [p.index for p in b]
        assert [p.score for p in a] == pytest.approx([p.score for p in b], abs=1e-5)
    for a_bytes, b_bytes in zip(fast_vectors, slow_vectors, strict=True):
        a_vec = torch.frombuffer(bytearray(a_bytes), dtype=torch.float32)
        b_vec = torch.frombuffer(bytearray(b_bytes), dtype=torch.float32)
        assert torch.allclose(a_vec, b_vec, atol=1e-5)


def test_off_the_cpu_only_the_folding_is_done_and_the_network_moves_there() -> None:
    # "meta" stands in for a GPU here: any device but the CPU gets no channels-last
    # until `make gpu-check` has measured it there; the check itself runs on the CPU.
    torch.manual_seed(0)
    prepared = prepare_for_inference(zoo.build_model("resnet18", 3, SIZE).eval(), META, SIZE)
    assert prepared.folded and not prepared.channels_last
    assert {p.device.type for p in prepared.module.parameters()} == {"meta"}


def test_a_network_that_refuses_the_check_batch_is_served_as_built() -> None:
    # A head sized for 16 px fails on any other size: preparing at 12 px must not raise
    # (the requests meet the error where they always did) and changes nothing.
    model = builder(Flattening)()
    prepared = prepare_for_inference(model, CPU, SIZE - 4)
    assert prepared.module is model and prepared.describe() == "as built"
    assert batch_norms(model) == 1
