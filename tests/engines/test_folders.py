"""The torch-free dataset folder checks follow torchvision's own rules."""

from __future__ import annotations

from torchvision.datasets.folder import IMG_EXTENSIONS

from engines import folders


def test_image_extensions_are_torchvisions() -> None:
    assert folders.IMG_EXTENSIONS == IMG_EXTENSIONS
