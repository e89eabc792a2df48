"""Cheap checks of a dataset folder: names only, no image opened and no torch imported,
so the server can refuse a bad dataset path when a task is submitted.

The rules are `torchvision.datasets.ImageFolder`'s (its image extensions, one sub-folder
per class), which `engines.datasets` then reads.
"""

from __future__ import annotations

import os

# torchvision.datasets.folder.IMG_EXTENSIONS, copied so the server need not import
# torchvision; tests/engines/test_folders.py checks they still agree.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image_file(path: str) -> bool:
    """Whether ImageFolder should read `path` as an image.

    Hidden files are skipped: macOS leaves `._name.jpg` resource forks beside real images,
    and PIL cannot open them.
    """
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def find_classes(root: str) -> list[str]:
    """The class sub-folders of an ImageFolder root, sorted (their order is the label order).

    Hidden folders (`.ipynb_checkpoints`, `.git`) are not classes.
    """
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _has_image(folder: str) -> bool:
    # Stops at the first image, so checking a folder of a million files stays cheap.
    for _dirpath, _dirnames, filenames in os.walk(folder, followlinks=True):
        if any(is_image_file(name) for name in filenames):
            return True
    return False


def validate_image_folder(path: str) -> str | None:
    """None if `path` looks like an ImageFolder, else a sentence saying what is wrong.

    Looks at names only (no image is opened): every class sub-folder must hold at least
    one file with an image extension, as `torchvision.datasets.ImageFolder` requires.
    """
    if not os.path.exists(path):
        return f"dataset folder {path} does not exist"
    if not os.path.isdir(path):
        return f"dataset {path} is a file; expected a folder with one sub-folder per class"
    try:
        classes = find_classes(path)
        empty = [name for name in classes if not _has_image(os.path.join(path, name))]
    except OSError as exc:
        return f"cannot read dataset folder {path}: {exc.strerror or exc}"
    if not classes:
        return (
            f"dataset folder {path} has no class sub-folders; put each class's images in a "
            f"sub-folder named after the class, such as {os.path.join(path, 'cat', '1.jpg')}"
        )
    if empty:
        shown = ", ".join(repr(name) for name in empty[:3])
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        return (
            f"class folder {shown}{more} in {path} has no images "
            f"(looked for {', '.join(IMG_EXTENSIONS)})"
        )
    return None


def top_level(path: str) -> tuple[list[str], list[str]]:
    """(image files, class sub-folders) directly in `path`, each sorted."""
    images: list[str] = []
    folders: list[str] = []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                folders.append(entry.name)
            elif entry.is_file() and is_image_file(entry.name):
                images.append(entry.name)
    return sorted(images), sorted(folders)


def validate_inference_folder(path: str) -> str | None:
    """None if batch inference can read `path`, else a sentence saying what is wrong.

    Two layouts are accepted: an ImageFolder (one sub-folder per class, checked as
    `validate_image_folder` does; its images are labelled with their folder's name), or a
    flat folder holding image files directly (unlabelled). A folder with both loose images
    and sub-folders is refused rather than guessed at: either reading would silently skip
    some of its images. Cheap: it reads names only and opens no image.
    """
    if not os.path.exists(path):
        return f"dataset folder {path} does not exist"
    if not os.path.isdir(path):
        return (
            f"dataset {path} is a file; expected a folder of images, or a folder with one "
            "sub-folder of images per class"
        )
    try:
        images, folders = top_level(path)
    except OSError as exc:
        return f"cannot read dataset folder {path}: {exc.strerror or exc}"
    if images and folders:
        return (
            f"dataset folder {path} holds both images ({images[0]!r}, ...) and sub-folders "
            f"({folders[0]!r}, ...); use either a flat folder of images, or one sub-folder "
            "per class with no images beside them"
        )
    if folders:
        return validate_image_folder(path)
    if not images:
        return (
            f"dataset folder {path} has no images (looked for {', '.join(IMG_EXTENSIONS)}); "
            "put the images in it directly, or in one sub-folder per class"
        )
    return None
