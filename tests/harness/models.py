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


class _RunsCode:
    """Unpickling this runs `touch marker`: what a hostile model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def write_foreign_models(folder: Path, marker: Path) -> dict[str, Path]:
    """Files a model path may name that are not Tandem models: bytes that are no PyTorch
    file, a bare state dict, and a Tandem-looking dict whose unpickling would create
    `marker` (it must never appear)."""
    folder.mkdir(parents=True, exist_ok=True)
    damaged = folder / "damaged.pt"
    damaged.write_bytes(b"\x80\x04not a model at all")
    bare = folder / "state_dict.pt"
    torch.save(zoo.build_model("squeezenet1_1", 2, 32).state_dict(), bare)
    carrier = folder / "runs_code.pt"
    torch.save({"format": "tandem.model", "version": 1, "state_dict": _RunsCode(marker)}, carrier)
    return {"damaged": damaged, "state_dict": bare, "runs_code": carrier}
