"""A network made ready for answering: batch norm folded into its convolutions, and
activations in channels-last memory, each kept only when it gives the same numbers.

Why: in eval mode a batch norm after a convolution is a fixed per-channel scale and shift,
which can be folded into the convolution's weights and bias once, at load, instead of
being computed on every pass; and oneDNN's (and cuDNN's) convolutions run faster on
channels-last (NHWC) tensors than on NCHW ones. Measured on a 2-core Xeon with resnet18 at
224 px, 2 threads: 53 -> 67 images/s at batch 1, 67 -> 97 at batch 8 (bench/README.md,
"Predict: folding and channels-last"). Transformers (ViT, Swin) neither gain nor lose.

Every preparation is checked before it is used: the prepared network must answer a
seeded batch as the network as built does (within float32 rounding), or the next, more
modest one is tried, down to the network as built. So a model whose graph cannot be
traced, or whose layers mind the memory layout, is served exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.fx.experimental.optimization import fuse

__all__ = ["PreparedModel", "prepare_for_inference"]

# How close a prepared network's logits must stay to the built one's, relative to the
# largest logit (at least 1): float32 rounding in another summation order, a few ulps
# over hundreds of layers. Folding resnet18 measures about 3e-6.
TOLERANCE = 1e-4
# The seeded check batch: two images, so a per-image mistake cannot hide in batch 1.
CHECK_BATCH = 2


@dataclass(frozen=True)
class PreparedModel:
    """The network to run, the memory format its input should have, and what was done
    (for the worker's log and for tests)."""

    module: torch.nn.Module
    memory_format: torch.memory_format
    folded: bool

    @property
    def channels_last(self) -> bool:
        return self.memory_format == torch.channels_last

    def describe(self) -> str:
        parts = [
            "batch norm folded into convolutions" if self.folded else "",
            "channels-last" if self.channels_last else "",
        ]
        done = " and ".join(part for part in parts if part)
        return done or "as built"


def prepare_for_inference(
    build: Callable[[], torch.nn.Module], device: torch.device, image_size: int
) -> PreparedModel:
    """`build()` (a fresh network in eval mode on `device`) prepared as the module
    docstring says. `build` may be called twice: folding changes the network it folds,
    so a fold that fails its check is undone by building again."""
    model = build()
    sample = _check_batch(device, image_size)
    with torch.inference_mode():
        reference = model(sample)
    if not isinstance(reference, torch.Tensor):
        return PreparedModel(model, torch.contiguous_format, folded=False)
    try:
        folded: torch.nn.Module | None = fuse(model, inplace=True)
    except Exception:  # a graph fx cannot trace is served as built
        folded = None
    if folded is not None:
        for memory_format in (torch.channels_last, torch.contiguous_format):
            if _answers_alike(folded, memory_format, sample, reference):
                return PreparedModel(folded.eval(), memory_format, folded=True)
        model = build()  # folding changed `model` in place: start again from its weights
    if _answers_alike(model, torch.channels_last, sample, reference):
        return PreparedModel(model, torch.channels_last, folded=False)
    # `_answers_alike` moved the weights to channels-last: back, as built.
    model.to(memory_format=torch.contiguous_format)
    return PreparedModel(model, torch.contiguous_format, folded=False)


def _check_batch(device: torch.device, image_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(CHECK_BATCH, 3, image_size, image_size, generator=generator)
    return sample.to(device)


def _answers_alike(
    module: torch.nn.Module,
    memory_format: torch.memory_format,
    sample: torch.Tensor,
    reference: torch.Tensor,
) -> bool:
    """Whether `module`, its weights and input in `memory_format`, gives `reference`."""
    try:
        module.to(memory_format=memory_format)
        with torch.inference_mode():
            answer = module(sample.contiguous(memory_format=memory_format))
    except Exception:  # a layer that minds the layout fails the check
        return False
    if not isinstance(answer, torch.Tensor) or answer.shape != reference.shape:
        return False
    scale = max(1.0, float(reference.abs().max()))
    return bool((answer - reference).abs().max() <= TOLERANCE * scale)
