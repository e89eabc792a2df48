"""A network made ready for answering: batch norm folded into its convolutions, and on the
CPU activations in channels-last memory, each kept only when it gives the same numbers.

Why: in eval mode a batch norm after a convolution is a fixed per-channel scale and shift,
which can be folded into the convolution's weights and bias once, at load, instead of
being computed on every pass; and oneDNN's CPU convolutions run faster on channels-last
(NHWC) tensors than on NCHW ones. Measured on a 2-core Xeon with resnet18 at 224 px, 2
threads: 53 -> 67 images/s at batch 1, 72 -> 95 at batch 4 (bench/README.md, "Predict:
folding and channels-last"). Transformers (ViT, Swin) come out within 5% either way.
On a GPU only the folding is done: whether channels-last pays there (with IEEE float32
convolutions, which Predictor keeps) is for `make gpu-check` to measure first.

Every preparation is checked on the CPU before it is used: the prepared network must
answer a seeded batch as the network as built does (within float32 rounding), or the
next, more modest one is tried, down to the network as built. So a model whose graph
cannot be traced, or whose layers mind the memory layout, is served exactly as before.
The check runs before the network goes to its device, so a GPU never holds two copies.
"""

from __future__ import annotations

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

_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


@dataclass(frozen=True)
class PreparedModel:
    """The network to run (on its device), the memory format its input should have, and
    whether batch norms were folded (for the log and for tests)."""

    module: torch.nn.Module
    memory_format: torch.memory_format
    folded: bool

    @property
    def channels_last(self) -> bool:
        return self.memory_format == torch.channels_last

    def describe(self) -> str:
        """What was done, for a log line: "batch norm folded into convolutions and
        channels-last", one of the two, or "as built"."""
        parts = [
            "batch norm folded into convolutions" if self.folded else "",
            "channels-last" if self.channels_last else "",
        ]
        done = " and ".join(part for part in parts if part)
        return done or "as built"


def prepare_for_inference(
    model: torch.nn.Module, device: torch.device, image_size: int
) -> PreparedModel:
    """`model` (as built, in eval mode, on the CPU) prepared as the module docstring
    says, then moved to `device`."""
    sample = torch.randn(
        CHECK_BATCH, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)
    )
    try:
        with torch.inference_mode():
            reference = model(sample)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception:
        # The network as built cannot take the check batch (an input size it refuses):
        # preparing must not add a failure, so it is served as before and its requests
        # meet the error where they always did, with the Predictor's own message.
        reference = None
    if not isinstance(reference, torch.Tensor):
        return PreparedModel(model.to(device), torch.contiguous_format, folded=False)
    layouts = [torch.channels_last] if device.type == "cpu" else []
    candidates: list[tuple[torch.nn.Module, bool]] = [(model, False)]
    folded = _folded(model)
    if folded is not None:
        candidates.insert(0, (folded, True))
    for module, is_folded in candidates:
        for layout in [*layouts, torch.contiguous_format]:
            if module is model and layout == torch.contiguous_format:
                break  # the network as built: nothing to check
            if _switch_layout_and_check(module, layout, sample, reference):
                return PreparedModel(module.to(device), layout, folded=is_folded)
    model.to(memory_format=torch.contiguous_format)
    return PreparedModel(model.to(device), torch.contiguous_format, folded=False)


def _folded(model: torch.nn.Module) -> torch.nn.Module | None:
    """`model` with its batch norms folded into the convolutions before them (a new fx
    graph module; `model` itself is left as it was), or None when there is nothing to
    fold or fx cannot trace it."""
    before = _count_norms(model)
    if before == 0:
        return None
    try:
        # inplace: no deep copy of the whole network first; `fuse` traces into a new
        # graph module and copies only the convolutions it folds.
        folded = fuse(model, inplace=True)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception:  # a graph fx cannot trace is served as built
        return None
    return folded.eval() if _count_norms(folded) < before else None


def _count_norms(module: torch.nn.Module) -> int:
    return sum(isinstance(m, _NORMS) for m in module.modules())


def _switch_layout_and_check(
    module: torch.nn.Module,
    memory_format: torch.memory_format,
    sample: torch.Tensor,
    reference: torch.Tensor,
) -> bool:
    """Puts `module`'s weights in `memory_format` (left so: the caller moves on or
    undoes it), then says whether it answers `sample` with `reference`."""
    try:
        module.to(memory_format=memory_format)
        with torch.inference_mode():
            answer = module(sample.contiguous(memory_format=memory_format))
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception:  # a layer that minds the layout fails the check
        return False
    if not isinstance(answer, torch.Tensor) or answer.shape != reference.shape:
        return False
    scale = max(1.0, float(reference.abs().max()))
    return bool((answer - reference).abs().max() <= TOLERANCE * scale)
