"""The torchvision classification models Tandem knows, without importing torch.

Names and parameter counts come from `engines/model_table.py`, generated from the
installed torchvision by `scripts/generate_model_table.py` (a test checks they still
agree). The server validates model names and sizes models for the GPU memory planner
from here; workers build the models with `engines.zoo`, which follows the same rules.
"""

from __future__ import annotations

import difflib

from engines.model_table import PARAMETER_COUNTS

Triple = tuple[float, float, float]

# The shape the table's counts are for: ImageNet's classes at its usual size.
SIZING_CLASSES = 1000
SIZING_IMAGE_SIZE = 224

# Models whose builders grow auxiliary classifiers (a tuple output in train mode) and warn
# about a changed default init unless told; a plain classifier wants neither.
AUX_LOGITS_MODELS = frozenset({"googlenet", "inception_v3"})

# torchvision's googlenet and inception_v3 weights (ported from TensorFlow) were trained
# on images scaled to [-1, 1]; its builders add `transform_input`, a conversion from
# ImageNet-normalised input, whenever they load them. Normalising with mean = std = 0.5
# gives those very tensors, so zoo builds these models without the conversion (one
# architecture for every source of weights) and a training that starts from these
# weights normalises this way; its artifact records it for inference and export.
TORCHVISION_WEIGHTS_NORMALISATION: dict[str, tuple[Triple, Triple]] = {
    name: ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) for name in ("googlenet", "inception_v3")
}

# Vision transformers bake the input size into their position embeddings, so the size
# must be given at build time and be a multiple of the patch size.
VIT_PATCH_SIZES = {"vit_b_16": 16, "vit_b_32": 32, "vit_l_16": 16, "vit_l_32": 32, "vit_h_14": 14}

# MaxViT partitions every block's grid into 7x7 windows; its builder takes `input_size`.
MAXVIT_MODELS = frozenset({"maxvit_t"})
_MAXVIT_PARTITION = 7
_MAXVIT_BLOCKS = 4

_NAMES = tuple(sorted(PARAMETER_COUNTS))

# A model missing from the table (a task stored before torchvision changed) is sized as
# the largest one known: too high an estimate only makes a task wait, too low one fails it.
_UNKNOWN_SIZE = max(PARAMETER_COUNTS.values())


def classification_models() -> list[str]:
    """Every model name `engines.zoo.build_model` accepts, sorted."""
    return list(_NAMES)


def parameter_count(name: str) -> int:
    """How many numbers `name` learns, with 1000 classes at 224 px; for a name missing
    from the table, as many as the largest model known."""
    return PARAMETER_COUNTS.get(name, _UNKNOWN_SIZE)


def suggest(name: str, limit: int = 3) -> list[str]:
    """Known model names close to `name`, best first (empty when nothing is close)."""
    by_lower = {known.lower(): known for known in _NAMES}
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
    if name not in PARAMETER_COUNTS:
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
    patch = VIT_PATCH_SIZES.get(name)
    if patch is not None and image_size % patch != 0:
        below = image_size // patch * patch
        nearest = [str(size) for size in (below, below + patch) if size > 0]
        return (
            f"model {name} cannot take {image_size} px images: the size must be a multiple "
            f"of its {patch} px patches, such as {_either(nearest)}"
        )
    if name in MAXVIT_MODELS and not _maxvit_grid_ok(image_size):
        return f"model {name} cannot take {image_size} px images: use a multiple of 224 px"
    return None
