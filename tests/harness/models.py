"""Model files for tests: a freshly built torchvision model saved as a Tandem artifact,
where a server (or a worker) may read it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from engines import zoo
from engines.artifacts import save_artifact


def write_model(path: Path, architecture: str, classes: Sequence[str], image_size: int) -> Path:
    """A random-init (seed 0) `architecture` over `classes` at `image_size`, saved at `path`."""
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_artifact(
        str(path),
        model=zoo.build_model(architecture, len(classes), image_size),
        architecture=architecture,
        classes=list(classes),
        image_size=image_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        epoch=0,
        metrics={},
    )
    return path
