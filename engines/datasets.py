"""Datasets a job trains or infers on: an ImageFolder directory, or a generated set.

Every dataset yields `(image, label)` with the image a normalised float CHW tensor at the
job's `image_size`; `image_transform` is the one place that preprocessing is defined, so
training, batch inference and Predict feed a model the same numbers.

The cheap checks of a dataset folder (names only, no torch) live in `engines.folders`, so
the server can reject a bad dataset path when a task is submitted rather than when it runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms

from engines.folders import (
    find_classes,
    is_image_file,
    top_level,
    validate_image_folder,
    validate_inference_folder,
)
from engines.jobs import JobError

SYNTHETIC = "synthetic"

# Datasets are normalised with ImageNet's statistics unless the starting weights learned
# with others (`engines.initial_weights.input_normalisation`): the usual choice for
# torchvision models, and a fixed pair means an artifact's mean/std never depend on a
# data scan.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Triple = tuple[float, float, float]
LabelledDataset = Dataset[tuple[torch.Tensor, int]]

# The synthetic set: one distinct coloured shape per class, on a noisy grey background.
SYNTHETIC_CLASSES = ("blue_stripes", "green_circle", "red_square", "yellow_cross")
SYNTHETIC_PER_CLASS = 32
_SYNTHETIC_MIN_SIZE = 8
_SYNTHETIC_COLOURS = {
    "blue_stripes": (0.1, 0.2, 0.9),
    "green_circle": (0.1, 0.8, 0.2),
    "red_square": (0.9, 0.1, 0.1),
    "yellow_cross": (0.9, 0.85, 0.1),
}


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset ready for a DataLoader, with what a model artifact must remember of it."""

    dataset: LabelledDataset
    classes: list[str]
    mean: Triple
    std: Triple

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


def image_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> transforms.Compose:
    """PIL image -> normalised float tensor, `image_size` px square (shorter side, centre crop)."""
    return transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def _open_rgb(path: str) -> Image.Image:
    # Grayscale, palette and RGBA files all become 3-channel RGB, which every model expects.
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors.
        raise JobError(f"cannot read image {path}: {exc}") from None


# torchvision ships no type information, so mypy sees ImageFolder as Any.
class _ImageFolder(datasets.ImageFolder):  # type: ignore[misc]
    """ImageFolder with Tandem's class discovery (hidden folders are not classes)."""

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        classes = find_classes(os.fspath(directory))
        return classes, {name: index for index, name in enumerate(classes)}


def _load_image_folder(path: str, image_size: int, mean: Triple, std: Triple) -> LoadedDataset:
    problem = validate_image_folder(path)
    if problem is not None:
        raise JobError(problem)
    try:
        folder = _ImageFolder(
            path,
            transform=image_transform(image_size, mean, std),
            loader=_open_rgb,
            is_valid_file=is_image_file,
        )
    except OSError as exc:  # The folder changed between the check and the scan.
        raise JobError(f"cannot read dataset folder {path}: {exc}") from None
    return LoadedDataset(folder, list(folder.classes), mean, std)


class SyntheticShapes(Dataset[tuple[torch.Tensor, int]]):
    """A small generated set a CNN learns in an epoch or two: coloured shapes plus noise.

    Image `i` is drawn from a generator seeded by `(seed, i)`, so the set is the same on
    every run and every epoch without being held in memory.
    """

    def __init__(
        self,
        image_size: int,
        seed: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        per_class: int = SYNTHETIC_PER_CLASS,
    ) -> None:
        self.image_size = image_size
        self.seed = seed
        self.per_class = per_class
        self.classes = list(SYNTHETIC_CLASSES)
        self.targets = [index // per_class for index in range(per_class * len(self.classes))]
        self._normalize = transforms.Normalize(mean, std)
        # Pixel centres in [0, 1): shapes are placed in image-relative units.
        axis = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
        self._y, self._x = torch.meshgrid(axis, axis, indexing="ij")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        label = self.targets[index]
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**63)
        return self._normalize(self.render(label, generator)), label

    def render(self, label: int, generator: torch.Generator) -> torch.Tensor:
        """One unnormalised image of class `label`, values in [0, 1]."""

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=generator))

        name = self.classes[label]
        x, y = self._x, self._y
        size = uniform(0.35, 0.6)
        cx, cy = uniform(size / 2, 1 - size / 2), uniform(size / 2, 1 - size / 2)
        if name == "red_square":
            mask = ((x - cx).abs() <= size / 2) & ((y - cy).abs() <= size / 2)
        elif name == "green_circle":
            mask = (x - cx) ** 2 + (y - cy) ** 2 <= (size / 2) ** 2
        elif name == "blue_stripes":
            period = uniform(0.25, 0.4)
            mask = torch.remainder(y + uniform(0, 1), period) < period / 2
        else:
            arm = size / 6
            box = ((x - cx).abs() <= size / 2) & ((y - cy).abs() <= size / 2)
            mask = box & (((x - cx).abs() <= arm) | ((y - cy).abs() <= arm))
        background = torch.full((3, 1, 1), uniform(0.2, 0.5))
        colour = torch.tensor(_SYNTHETIC_COLOURS[name]).view(3, 1, 1)
        colour = colour + 0.1 * (torch.rand((3, 1, 1), generator=generator) - 0.5)
        image = torch.where(mask, colour, background)
        noise = 0.08 * torch.randn(image.shape, generator=generator)
        return (image + noise).clamp(0.0, 1.0)


def _load_synthetic(image_size: int, seed: int, mean: Triple, std: Triple) -> LoadedDataset:
    if image_size < _SYNTHETIC_MIN_SIZE:
        raise JobError(
            f"the synthetic dataset needs image_size of at least {_SYNTHETIC_MIN_SIZE} px, "
            f"not {image_size}"
        )
    shapes = SyntheticShapes(image_size, seed, mean, std)
    return LoadedDataset(shapes, list(shapes.classes), mean, std)


def load_dataset(
    spec: str,
    image_size: int,
    seed: int,
    mean: Triple = IMAGENET_MEAN,
    std: Triple = IMAGENET_STD,
) -> LoadedDataset:
    """The dataset named by `spec`: the literal `synthetic`, or an ImageFolder path, its
    images normalised with `mean` and `std` per channel.

    Raises JobError with a sentence for a user when the folder cannot be used.
    """
    if image_size < 1:
        raise JobError(f"image_size must be a positive number of pixels, not {image_size}")
    if spec == SYNTHETIC:
        return _load_synthetic(image_size, seed, mean, std)
    return _load_image_folder(spec, image_size, mean, std)


def _labels(dataset: LabelledDataset) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return [int(label) for label in targets]
    # Without cheap labels, read every sample rather than guess: correct, if slow.
    return [int(dataset[index][1]) for index in range(len(dataset))]  # type: ignore[arg-type]


def split(
    dataset: LabelledDataset, val_split: float, seed: int
) -> tuple[LabelledDataset, LabelledDataset | None]:
    """(train, validation) subsets; validation is None when `val_split` is 0.

    Stratified and seeded: each class gives `val_split` of its images to validation (but
    always keeps one to train on), so a small dataset still validates on every class and
    the same seed always gives the same split.
    """
    if not 0.0 <= val_split < 1.0:
        raise JobError(f"val_split must be at least 0 and below 1, not {val_split}")
    if val_split == 0.0:
        return dataset, None
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(_labels(dataset)):
        by_class.setdefault(label, []).append(index)
    generator = torch.Generator().manual_seed(seed)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_val = min(int(len(members) * val_split + 0.5), len(members) - 1)
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    if not val:
        raise JobError(
            f"val_split {val_split} leaves no images for validation out of {len(train)}; "
            "use a larger val_split, or 0 to train without validation"
        )
    return Subset(dataset, sorted(train)), Subset(dataset, sorted(val))


def synthetic_dataset(
    image_size: int,
    seed: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SyntheticShapes:
    """The synthetic set at `image_size` px, normalised with `mean`/`std`.

    For batch inference, which must normalise as the model's artifact says rather than
    with the defaults. Raises JobError when `image_size` is too small to draw the shapes.
    """
    if image_size < _SYNTHETIC_MIN_SIZE:
        raise JobError(
            f"the synthetic dataset needs image_size of at least {_SYNTHETIC_MIN_SIZE} px, "
            f"not {image_size}"
        )
    return SyntheticShapes(image_size, seed, mean, std)


@dataclass(frozen=True)
class InferenceFolder:
    """The images a batch inference reads from a folder, in the order it reports them.

    `files` are relative to `root`; `labels[i]` is the class name of `files[i]` (its
    class sub-folder) in an ImageFolder, or None in a flat folder of images.
    """

    root: str
    files: list[str]
    labels: list[str | None]
    # The class sub-folders, sorted; empty for a flat folder (its images have no labels).
    classes: list[str]

    @property
    def labelled(self) -> bool:
        return bool(self.classes)


def scan_inference_folder(path: str) -> InferenceFolder:
    """The images of `path` (see `validate_inference_folder`), raising JobError if unusable.

    An ImageFolder lists its images in `torchvision.datasets.ImageFolder`'s order (by
    class, then walking each class folder sorted), so a row of the predictions matches the
    sample of the same index in training; a flat folder lists its images sorted by name.
    """
    problem = validate_inference_folder(path)
    if problem is not None:
        raise JobError(problem)
    try:
        images, classes = top_level(path)
        files: list[str] = []
        labels: list[str | None] = []
        if not classes:
            files = images
            labels = [None] * len(images)
        for name in classes:
            # The same walk as torchvision's make_dataset, hence the same order.
            for dirpath, _dirnames, filenames in sorted(
                os.walk(os.path.join(path, name), followlinks=True)
            ):
                for filename in sorted(filenames):
                    if is_image_file(filename):
                        full = os.path.join(dirpath, filename)
                        files.append(os.path.relpath(full, path).replace(os.sep, "/"))
                        labels.append(name)
    except OSError as exc:  # The folder changed between the check and the scan.
        raise JobError(f"cannot read dataset folder {path}: {exc.strerror or exc}") from None
    if not files:
        raise JobError(f"dataset folder {path} has no images")
    return InferenceFolder(root=path, files=files, labels=labels, classes=classes)
