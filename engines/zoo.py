"""The model zoo: torchvision classification models by name, randomly initialised.

Nothing here downloads weights: every model is built with `weights=None`, so a run never
touches the network. The names are torchvision's own (`resnet18`, `vit_b_16`, ...), which
is what users type and what a model artifact records as its architecture.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import torch
import torchvision

# Models whose builders grow auxiliary classifiers (a tuple output in train mode) and warn
# about a changed default init unless told; a plain classifier wants neither.
_AUX_LOGITS_MODELS = frozenset({"googlenet", "inception_v3"})

# Vision transformers bake the input size into their position embeddings, so the size
# must be given at build time and be a multiple of the patch size.
_VIT_PATCH_SIZES = {"vit_b_16": 16, "vit_b_32": 32, "vit_l_16": 16, "vit_l_32": 32, "vit_h_14": 14}

# MaxViT partitions every block's grid into 7x7 windows; its builder takes `input_size`.
_MAXVIT_MODELS = frozenset({"maxvit_t"})
_MAXVIT_PARTITION = 7
_MAXVIT_BLOCKS = 4


@functools.cache
def _model_names() -> tuple[str, ...]:
    # `module=torchvision.models` keeps only the classification builders: detection,
    # segmentation, video, optical flow and quantized models live in submodules.
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def classification_models() -> list[str]:
    """Every model name `build_model` accepts, sorted."""
    return list(_model_names())


def suggest(name: str, limit: int = 3) -> list[str]:
    """Known model names close to `name`, best first (empty when nothing is close)."""
    names = _model_names()
    by_lower = {known.lower(): known for known in names}
    matches = difflib.get_close_matches(name.strip().lower(), list(by_lower), n=limit, cutoff=0.6)
    return [by_lower[match] for match in matches]


def _either(options: list[str]) -> str:
    # "a", "a or b", "a, b or c": reads as a sentence in an error message.
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def _maxvit_grid_ok(image_size: int) -> bool:
    # Mirrors torchvision's own check (a stem and each block halve the grid with a
    # stride-2, padding-1, 3x3 conv) so the problem is found before building 30M params.
    size = (image_size - 1) // 2 + 1
    for _ in range(_MAXVIT_BLOCKS):
        size = (size - 1) // 2 + 1
        if size % _MAXVIT_PARTITION != 0:
            return False
    return True


def validate_model(name: str, image_size: int | None = None) -> str | None:
    """A sentence saying why `name` (at `image_size` px) cannot be built, or None if it can.

    Cheap: builds nothing, so the server can call it when a task is submitted. It only
    knows the constraints a builder enforces; a model that builds but whose layers shrink
    a small image to nothing fails later, on its first forward pass.
    """
    if name not in _model_names():
        close = suggest(name)
        if close:
            return f"unknown model {name!r}; did you mean {_either(close)}?"
        return (
            f"unknown model {name!r}: models are torchvision classification models "
            "such as resnet18 or mobilenet_v3_small"
        )
    if image_size is None:
        return None
    if image_size < 1:
        return f"image_size must be a positive number of pixels, not {image_size}"
    patch = _VIT_PATCH_SIZES.get(name)
    if patch is not None and image_size % patch != 0:
        below = image_size // patch * patch
        nearest = [str(size) for size in (below, below + patch) if size > 0]
        return (
            f"model {name} cannot take {image_size} px images: the size must be a multiple "
            f"of its {patch} px patches, such as {_either(nearest)}"
        )
    if name in _MAXVIT_MODELS and not _maxvit_grid_ok(image_size):
        return f"model {name} cannot take {image_size} px images: use a multiple of 224 px"
    return None


def build_model(name: str, num_classes: int, image_size: int) -> torch.nn.Module:
    """A freshly initialised `name` classifier with `num_classes` outputs.

    Raises ValueError (with a sentence fit for a user) for an unknown name, a class count
    below 1, or an image size the architecture cannot be built for.
    """
    problem = validate_model(name, image_size)
    if problem is not None:
        raise ValueError(problem)
    if num_classes < 1:
        raise ValueError(f"a classifier needs at least one class, not {num_classes}")
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if name in _AUX_LOGITS_MODELS:
        kwargs.update(aux_logits=False, init_weights=True)
    if name in _VIT_PATCH_SIZES:
        kwargs["image_size"] = image_size
    if name in _MAXVIT_MODELS:
        kwargs["input_size"] = (image_size, image_size)
    model: torch.nn.Module = torchvision.models.get_model(name, **kwargs)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """How many numbers the model learns."""
    return sum(parameter.numel() for parameter in model.parameters())
