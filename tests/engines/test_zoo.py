"""The model zoo: which names exist, helpful errors, and the quirky builders."""

from __future__ import annotations

import pytest
import torch

from engines.zoo import build_model, classification_models, suggest, validate_model


def test_the_zoo_lists_classification_models_only() -> None:
    names = classification_models()
    assert names == sorted(names)
    assert {"resnet18", "mobilenet_v3_small", "vit_b_16", "inception_v3"} <= set(names)
    # Detection, segmentation, video, optical flow and quantized builders are not here.
    for other in ("fasterrcnn_resnet50_fpn", "fcn_resnet50", "r3d_18", "raft_small"):
        assert other not in names
    assert not any(name.startswith("quantized") for name in names)


def test_suggest_offers_close_names() -> None:
    assert suggest("resnet19")[0] == "resnet18"
    assert "mobilenet_v3_small" in suggest("MobileNet_V3_Small")
    assert suggest("xyzzy") == []


def test_an_unknown_model_is_a_value_error_with_suggestions() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'; did you mean resnet18"):
        build_model("resnet19", num_classes=2, image_size=32)
    with pytest.raises(ValueError, match="unknown model 'xyzzy': models are torchvision"):
        build_model("xyzzy", num_classes=2, image_size=32)


@pytest.mark.parametrize(
    ("name", "image_size"),
    [
        ("resnet18", 32),
        ("mobilenet_v3_small", 32),
        ("squeezenet1_1", 32),
        ("googlenet", 32),
        ("inception_v3", 80),
        ("vit_b_32", 64),
        ("swin_t", 32),
    ],
)
def test_models_build_for_the_class_count_and_size(name: str, image_size: int) -> None:
    model = build_model(name, num_classes=3, image_size=image_size)
    # Train mode is where googlenet and inception_v3 would return auxiliary outputs.
    model.train()
    output = model(torch.randn(2, 3, image_size, image_size))
    assert isinstance(output, torch.Tensor) and output.shape == (2, 3)


def test_image_size_rules_are_known_before_building() -> None:
    assert validate_model("vit_b_16", 64) is None
    problem = validate_model("vit_b_16", 60)
    assert problem is not None and "multiple of its 16 px patches, such as 48 or 64" in problem
    with pytest.raises(ValueError, match="model vit_b_16 cannot take 60 px images"):
        build_model("vit_b_16", num_classes=2, image_size=60)
    assert validate_model("maxvit_t", 224) is None
    assert "multiple of 224" in str(validate_model("maxvit_t", 112))
    assert validate_model("resnet18") is None


def test_at_least_one_class_is_needed() -> None:
    with pytest.raises(ValueError, match="at least one class"):
        build_model("resnet18", num_classes=0, image_size=32)
