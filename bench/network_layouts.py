"""Forward-pass speed of one network as built, with batch norm folded, and folded in
channels-last memory, on one device: what decides whether `engines.prepared_model` should
use channels-last there (it does on the CPU; on a GPU it waits for this figure).

Each variant runs eval-mode forward passes at one batch size under IEEE float32
convolutions, as `Predictor` runs them, in turns (built, folded, folded channels-last,
then again), for about `seconds` in all; a GPU is synchronised before each clock read.
The variants' logits on one seeded batch are compared too: the largest difference from
the built network's is reported, so a layout that is fast but wrong shows.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch

from engines.artifacts import load_artifact
from engines.predict import full_float32_convolutions
from engines.prepared_model import prepare_for_inference

__all__ = ["measure_layouts"]

ROUNDS = 2


def measure_layouts(
    model_path: str, device: torch.device, batch: int, seconds: float
) -> dict[str, float]:
    """Images/s of each variant of the artifact's network on `device` (see the module
    docstring), the channels-last gain over folded NCHW, and the largest logit difference."""
    artifact = load_artifact(model_path)
    built = artifact.build_model().cpu().eval()
    # Folded on the CPU (where the check runs); the layouts are then tried on `device`.
    folded = prepare_for_inference(copy.deepcopy(built), torch.device("cpu"), artifact.image_size)
    size = artifact.image_size
    sample = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    variants: dict[str, tuple[torch.nn.Module, torch.memory_format]] = {
        "built": (built.to(device), torch.contiguous_format),
        "folded": (_on(folded.module, device, torch.contiguous_format), torch.contiguous_format),
        "folded_channels_last": (
            _on(folded.module, device, torch.channels_last),
            torch.channels_last,
        ),
    }
    inputs = {
        name: sample.to(device).contiguous(memory_format=layout)
        for name, (_, layout) in variants.items()
    }
    sync: Callable[[], None] = (
        (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    )
    images = dict.fromkeys(variants, 0)
    spent = dict.fromkeys(variants, 0.0)
    logits: dict[str, torch.Tensor] = {}
    with full_float32_convolutions(), torch.inference_mode():
        for name, (module, _) in variants.items():  # warm-up, and the logits to compare
            logits[name] = module(inputs[name]).float().cpu()
        sync()
        per_turn = seconds / (ROUNDS * len(variants))
        for _ in range(ROUNDS):
            for name, (module, _) in variants.items():
                started = time.perf_counter()
                while True:
                    module(inputs[name])
                    images[name] += batch
                    sync()
                    if time.perf_counter() - started >= per_turn:
                        break
                spent[name] += time.perf_counter() - started
    rate = {name: images[name] / spent[name] for name in variants}
    diff = max(float((logits[name] - logits["built"]).abs().max()) for name in variants)
    return {
        "layout_built_images_per_s": rate["built"],
        "layout_folded_images_per_s": rate["folded"],
        "layout_folded_channels_last_images_per_s": rate["folded_channels_last"],
        "layout_channels_last_gain": rate["folded_channels_last"] / rate["folded"],
        "layout_max_abs_diff": diff,
    }


def _on(
    module: torch.nn.Module, device: torch.device, layout: torch.memory_format
) -> torch.nn.Module:
    """A copy of `module` on `device` with its weights in `layout`."""
    moved = copy.deepcopy(module).to(device)
    return moved.to(memory_format=layout)
