"""Where a training task keeps its checkpoints, and which is the newest.

Plain file names, no torch: the server lists checkpoints to resume a task without
loading any of them (a worker does that, with `weights_only=True`).
"""

from __future__ import annotations

import os


def checkpoint_path(output_dir: str, epoch: int) -> str:
    """Where the checkpoint after `epoch` (1-based) is written."""
    return os.path.join(output_dir, "checkpoints", f"epoch_{epoch}.pt")


def resume_point_path(output_dir: str) -> str:
    """Where a preempted run saves its whole state (`engines.training_state`)."""
    return os.path.join(output_dir, "checkpoints", "preempted.pt")


def normalisation_path(output_dir: str) -> str:
    """Where a training records how it normalises its images (`engines.training`), so
    that a resumed run goes on as it started; beside its model file, so that its
    checkpoints folder holds checkpoints only."""
    return os.path.join(output_dir, "normalisation.json")


def latest_checkpoint(output_dir: str) -> tuple[int, str] | None:
    """(epoch, path) of the newest checkpoint in `output_dir`, if any."""
    folder = os.path.join(output_dir, "checkpoints")
    epochs = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        stem = name.removeprefix("epoch_").removesuffix(".pt")
        if name.startswith("epoch_") and name.endswith(".pt") and stem.isdigit():
            epochs.append(int(stem))
    if not epochs:
        return None
    return max(epochs), checkpoint_path(output_dir, max(epochs))
