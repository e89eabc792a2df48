"""The model zoo: torchvision classification models by name, randomly initialised.

Nothing here downloads weights: every model is built with `weights=None`, so a run never
touches the network. The names are torchvision's own (`resnet18`, `vit_b_16`, ...), which
is what users type and what a model artifact records as its architecture. Which names
exist and which image sizes they take is `engines.catalogue`'s (no torch), re-exported here.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision

from engines.catalogue import (
    AUX_LOGITS_MODELS,
    MAXVIT_MODELS,
    VIT_PATCH_SIZES,
    classification_models,
    suggest,
    validate_model,
)

__all__ = ["build_model", "classification_models", "count_parameters", "suggest", "validate_model"]


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
    if name in AUX_LOGITS_MODELS:
        kwargs.update(aux_logits=False, init_weights=True)
    if name in VIT_PATCH_SIZES:
        kwargs["image_size"] = image_size
    if name in MAXVIT_MODELS:
        kwargs["input_size"] = (image_size, image_size)
    model: torch.nn.Module = torchvision.models.get_model(name, **kwargs)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """How many numbers the model learns."""
    return sum(parameter.numel() for parameter in model.parameters())
