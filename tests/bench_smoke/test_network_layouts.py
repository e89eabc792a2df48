"""`bench/network_layouts.py` (run by `make gpu-check` on a GPU): on the CPU here, every
variant's speed is a positive finite number and the variants answer alike, so the GPU run
measures layouts, not a broken harness."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from bench.harness import save_model
from bench.network_layouts import measure_layouts


def test_every_variant_is_measured_and_answers_as_built(tmp_path: Path) -> None:
    model = save_model(tmp_path / "resnet18.pt", "resnet18", 10, 32)

    figures = measure_layouts(str(model), torch.device("cpu"), batch=2, seconds=0.3)

    assert set(figures) == {
        "layout_built_images_per_s",
        "layout_folded_images_per_s",
        "layout_folded_channels_last_images_per_s",
        "layout_channels_last_gain",
        "layout_max_abs_diff",
    }
    for name, value in figures.items():
        assert math.isfinite(value), (name, value)
        if name != "layout_max_abs_diff":
            assert value > 0, (name, value)
    assert figures["layout_max_abs_diff"] < 1e-4
