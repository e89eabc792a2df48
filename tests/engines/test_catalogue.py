"""The model catalogue: the committed table agrees with the installed torchvision."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torchvision

from engines import catalogue
from engines.model_table import (
    DEFAULT_WEIGHTS,
    PARAMETER_COUNTS,
    PRETRAINED_WEIGHTS,
    TORCHVISION_VERSION,
)
from engines.zoo import build_model, count_parameters

REGENERATE = "run scripts/generate_model_table.py"


def test_the_table_lists_every_classification_model_of_torchvision() -> None:
    installed = sorted(torchvision.models.list_models(module=torchvision.models))
    assert catalogue.classification_models() == installed, REGENERATE
    assert torchvision.__version__.split("+")[0] == TORCHVISION_VERSION, REGENERATE


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "googlenet", "vit_b_32"]
)
def test_counts_match_the_built_models(name: str) -> None:
    model = build_model(name, catalogue.SIZING_CLASSES, catalogue.SIZING_IMAGE_SIZE)
    assert catalogue.parameter_count(name) == count_parameters(model), REGENERATE


def test_the_weights_tables_match_torchvision() -> None:
    urls = {}
    defaults = {}
    for name in catalogue.classification_models():
        enum = torchvision.models.get_model_weights(name)
        urls[name] = {member.name: member.url for member in enum}
        defaults[name] = enum.DEFAULT.name
    assert urls == PRETRAINED_WEIGHTS, REGENERATE
    assert defaults == DEFAULT_WEIGHTS, REGENERATE


def test_a_model_missing_from_the_table_is_sized_as_the_largest() -> None:
    assert catalogue.parameter_count("resnet18") == PARAMETER_COUNTS["resnet18"]
    assert catalogue.parameter_count("gone_in_this_torchvision") == max(PARAMETER_COUNTS.values())


def test_the_catalogue_needs_no_torch() -> None:
    code = (
        "import sys, engines.catalogue, engines.checkpoints, engines.folders, "
        "engines.artifact_info, engines.pretrained; "
        "print(sorted({'torch', 'torchvision'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
