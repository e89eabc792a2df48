"""Training-time augmentation (`TrainRequest.augment`), reproducible image by image.

Every dataset yields normalised tensors at the job's size (`engines.datasets`); the
augmentation undoes the normalisation, transforms the image in [0, 1] (the range
torchvision's colour operations expect) and normalises it again.

The random draws of image `i` in epoch `e` come from a generator seeded by
(seed, epoch, i) alone, never from the order images were loaded in. So a run resumed in
the middle of an epoch (a preempted task) augments every later image exactly as the
uninterrupted run would, and DataLoader worker processes, however many, change
nothing: batches carry (epoch, index) keys, not bare indices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from engines.datasets import LabelledDataset

AUGMENTS = ("none", "light", "strong")

# RandomResizedCrop's area range for `light`: torchvision's reference recipe draws from
# 8 % .. 100 %, which suits photographs trained for a hundred epochs; a job of a few
# epochs on small images learns nothing from crops that keep a twelfth of an object.
LIGHT_CROP_SCALE = (0.35, 1.0)

Key = tuple[int, int]


def pipeline(augment: str, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The transform of an [0, 1] CHW image for `augment`, or None for `none`."""
    if augment == "none":
        return None
    light: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=LIGHT_CROP_SCALE, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if augment == "light":
        return _typed(v2.Compose(light))
    if augment == "strong":
        # TrivialAugment's colour operations want [0, 1] floats or uint8; it runs on uint8,
        # where every operation it can pick is defined.
        return _typed(
            v2.Compose(
                [
                    *light,
                    v2.ToDtype(torch.uint8, scale=True),
                    v2.TrivialAugmentWide(),
                    v2.ToDtype(torch.float32, scale=True),
                ]
            )
        )
    raise ValueError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTS)}")


def _typed(transform: v2.Transform) -> Callable[[torch.Tensor], torch.Tensor]:
    # torchvision ships no type information: its transforms are Any to mypy.
    def apply(image: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = transform(image)
        return result

    return apply


def image_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of image `index`'s draws in `epoch`: distinct per (seed, epoch, index)."""
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + index) % (2**63)


class AugmentedSet(Dataset[tuple[torch.Tensor, int]]):
    """`base` (normalised with `mean`/`std`) with `transform` applied, keyed by
    (epoch, index) so that each image's draws are its own (see the module's notes)."""

    def __init__(
        self,
        base: LabelledDataset,
        transform: Callable[[torch.Tensor], torch.Tensor],
        *,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int]:
        epoch, index = key
        image, label = self.base[index]
        plain = (image * self.std + self.mean).clamp(0.0, 1.0)
        # torchvision's transforms draw from torch's global generator: seed it for this
        # image only, and put it back, so dropout's draws in the training loop (same
        # process when there are no loader workers) are not moved by augmentation.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(image_seed(self.seed, epoch, index))
            augmented = self.transform(plain)
        return (augmented - self.mean) / self.std, label
