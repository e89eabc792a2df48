"""Datasets: the synthetic set, ImageFolder loading, splits and the submit-time check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SYNTHETIC,
    SYNTHETIC_CLASSES,
    SYNTHETIC_PER_CLASS,
    load_dataset,
    split,
    validate_image_folder,
)
from engines.jobs import JobError


def write_image(path: Path, mode: str, size: tuple[int, int] = (20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color="white" if mode != "L" else 200).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes in mixed modes and sizes, plus the litter real folders collect."""
    root = tmp_path / "pets"
    write_image(root / "cat" / "a.png", "L")  # grayscale, like the digits
    write_image(root / "cat" / "nested" / "b.PNG", "RGBA")
    write_image(root / "dog" / "c.jpg", "RGB", (40, 40))
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "._c.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    write_image(root / ".ipynb_checkpoints" / "d.png", "RGB")
    return root


def test_synthetic_is_balanced_deterministic_and_sized(tmp_path: Path) -> None:
    loaded = load_dataset(SYNTHETIC, image_size=24, seed=7)
    assert loaded.classes == list(SYNTHETIC_CLASSES)
    assert len(loaded) == SYNTHETIC_PER_CLASS * len(SYNTHETIC_CLASSES)
    assert (loaded.mean, loaded.std) == (IMAGENET_MEAN, IMAGENET_STD)
    labels = [loaded.dataset[i][1] for i in range(len(loaded))]
    assert np.bincount(labels).tolist() == [SYNTHETIC_PER_CLASS] * len(SYNTHETIC_CLASSES)
    image, _ = loaded.dataset[5]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32

    again = load_dataset(SYNTHETIC, image_size=24, seed=7)
    other = load_dataset(SYNTHETIC, image_size=24, seed=8)
    assert torch.equal(again.dataset[5][0], image)
    assert not torch.equal(other.dataset[5][0], image)


def test_synthetic_classes_differ_in_colour() -> None:
    # The mean colour alone tells the classes apart: a model has something real to learn.
    loaded = load_dataset(SYNTHETIC, image_size=32, seed=0)
    means = torch.stack(
        [
            torch.stack([loaded.dataset[c * SYNTHETIC_PER_CLASS + i][0] for i in range(8)]).mean(
                dim=(0, 2, 3)
            )
            for c in range(len(SYNTHETIC_CLASSES))
        ]
    )
    distances = torch.cdist(means, means) + torch.eye(len(means)) * 100
    assert distances.min() > 0.1


def test_an_image_folder_loads_as_rgb_at_the_image_size(folder: Path) -> None:
    loaded = load_dataset(str(folder), image_size=16, seed=0)

    assert loaded.classes == ["cat", "dog"]
    assert len(loaded) == 3  # not the text file, the resource fork or the hidden folder
    for index in range(len(loaded)):
        image, label = loaded.dataset[index]
        assert image.shape == (3, 16, 16) and label in (0, 1)
    # White normalised with ImageNet statistics.
    white, _ = loaded.dataset[2]
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(white.mean(dim=(1, 2)), expected, atol=1e-4)


def test_an_unreadable_image_is_a_job_error(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    loaded = load_dataset(str(tmp_path), image_size=16, seed=0)
    with pytest.raises(JobError, match=r"cannot read image .*broken\.jpg"):
        loaded.dataset[0]


def test_validate_image_folder_accepts_a_good_folder(folder: Path) -> None:
    assert validate_image_folder(str(folder)) is None


def test_validate_image_folder_says_what_is_wrong(tmp_path: Path) -> None:
    assert "does not exist" in str(validate_image_folder(str(tmp_path / "missing")))

    a_file = tmp_path / "file.png"
    write_image(a_file, "RGB")
    assert "is a file" in str(validate_image_folder(str(a_file)))

    flat = tmp_path / "flat"
    write_image(flat / "x.png", "RGB")
    assert "has no class sub-folders" in str(validate_image_folder(str(flat)))

    empty_class = tmp_path / "empty_class"
    write_image(empty_class / "cat" / "x.png", "RGB")
    (empty_class / "dog").mkdir()
    (empty_class / "dog" / "readme.txt").write_text("")
    problem = validate_image_folder(str(empty_class))
    assert problem is not None and "'dog'" in problem and "has no images" in problem


@pytest.mark.parametrize(
    ("make", "message"),
    [("missing", "does not exist"), ("empty", "has no class sub-folders")],
)
def test_a_bad_folder_is_a_job_error(tmp_path: Path, make: str, message: str) -> None:
    path = tmp_path / make
    if make == "empty":
        path.mkdir()
    with pytest.raises(JobError, match=message):
        load_dataset(str(path), image_size=16, seed=0)


def test_split_is_stratified_disjoint_and_seeded() -> None:
    dataset = load_dataset(SYNTHETIC, image_size=8, seed=0).dataset

    train, val = split(dataset, 0.25, seed=3)

    assert val is not None
    train_indices = list(train.indices)  # type: ignore[attr-defined]
    val_indices = list(val.indices)  # type: ignore[attr-defined]
    assert sorted(train_indices + val_indices) == list(range(len(dataset)))  # type: ignore[arg-type]
    val_labels = [i // SYNTHETIC_PER_CLASS for i in val_indices]
    assert np.bincount(val_labels).tolist() == [8, 8, 8, 8]
    again = split(dataset, 0.25, seed=3)[1]
    other = split(dataset, 0.25, seed=4)[1]
    assert list(again.indices) == val_indices  # type: ignore[union-attr]
    assert list(other.indices) != val_indices  # type: ignore[union-attr]


def test_split_without_validation_keeps_everything() -> None:
    dataset = load_dataset(SYNTHETIC, image_size=8, seed=0).dataset
    train, val = split(dataset, 0.0, seed=0)
    assert train is dataset and val is None


@pytest.mark.parametrize("val_split", [-0.1, 1.0])
def test_split_rejects_fractions_outside_0_to_1(val_split: float) -> None:
    dataset = load_dataset(SYNTHETIC, image_size=8, seed=0).dataset
    with pytest.raises(JobError, match="val_split must be"):
        split(dataset, val_split, seed=0)
