"""A training run's whole state at a batch boundary, so that a run stopped there (a
preempted task) continues with exactly the batches it had not run.

What "exactly" needs: the model and optimizer, every random generator a batch may draw
from (torch's CPU and CUDA generators for dropout and augmentation, Python's and
NumPy's for any transform that uses them), the place in the epoch (the epoch's data
order is derived from the seed and the epoch alone: `EpochBatches`), and the running
sums the epoch's metrics are made from. Saved with `torch.save` to a temporary file
then renamed, so a reader never sees half a file; loaded with `weights_only=True`, as
every model file is: only tensors and plain values, never code.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["FORMAT", "EpochBatches", "ResumePoint", "load", "save"]

# Written into the file, so that `load` refuses an epoch checkpoint (a model artifact)
# or anything else found where a resume point should be.
FORMAT = "tandem.training_state.v1"


class EpochBatches(Sampler[list[Any]]):
    """The batches of one epoch, as lists of dataset indices.

    Shuffled by a generator seeded from (seed, epoch) alone, so an epoch's order never
    depends on what ran before it in this process: a run resumed in the middle of epoch
    5 gets epoch 5's order, and skips the `start` batches it had already run without
    loading their images. `drop_last` drops a final partial batch.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int, *, drop_last: bool, keyed: bool = False
    ) -> None:
        self.size = size
        # Batches of (epoch, index) keys instead of indices, for a dataset whose images
        # depend on the epoch (`engines.augment.AugmentedSet`).
        self.keyed = keyed
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 1
        self.start = 0

    @property
    def batches(self) -> int:
        """Batches in a whole epoch."""
        whole, rest = divmod(self.size, self.batch_size)
        return whole + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next iteration yields `epoch`'s batches from batch `start` (0-based) on."""
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return max(0, self.batches - self.start)

    def __iter__(self) -> Iterator[list[Any]]:
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        for batch in range(self.start, self.batches):
            indices = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield [(self.epoch, i) for i in indices] if self.keyed else indices


def _epoch_seed(seed: int, epoch: int) -> int:
    # Distinct for every (seed, epoch) a job can have, within a 63-bit seed.
    return (seed * 1_000_003 + epoch) % (2**63)


@dataclass(frozen=True)
class ResumePoint:
    """Where a run stopped: in `epoch` (1-based), after `batches_done` of its batches."""

    epoch: int
    batches_done: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    # The epoch's running sums so far: summed loss, correct answers, images.
    loss_sum: float
    correct: float
    images: int
    # The metrics of the last finished epoch (empty in the first); they carry the
    # choice of the epoch to keep and early stopping's count (`engines.recipe`).
    metrics: dict[str, float]
    rng: dict[str, Any]
    # Answers right within the top 5 (counted with more than five classes).
    correct_top: float = 0.0
    # The fp16 gradient scaler's state (its scale and growth count); empty without one.
    # The learning rate needs nothing: it is a function of the step.
    scaler: dict[str, Any] = field(default_factory=dict)


def capture_rng() -> dict[str, Any]:
    """Every generator's state, as tensors and plain values (`weights_only` loads them)."""
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    numpy_keys = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, numpy_keys, int(position), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str, point: ResumePoint) -> None:
    """Writes `point` to `path` atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload = {
        "format": FORMAT,
        "epoch": point.epoch,
        "batches_done": point.batches_done,
        "model": point.model,
        "optimizer": point.optimizer,
        "loss_sum": point.loss_sum,
        "correct": point.correct,
        "images": point.images,
        "metrics": dict(point.metrics),
        "rng": point.rng,
        "correct_top": point.correct_top,
        "scaler": dict(point.scaler),
    }
    temporary = f"{path}.tmp"
    torch.save(payload, temporary)
    os.replace(temporary, path)


def load(path: str) -> ResumePoint:
    """Reads a resume point onto the CPU (generator states must stay there; the model's
    and optimizer's `load_state_dict` move theirs to the model's device); raises
    ValueError when the file is not one."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a training resume point")
    rng = payload["rng"]
    return ResumePoint(
        epoch=int(payload["epoch"]),
        batches_done=int(payload["batches_done"]),
        model=payload["model"],
        optimizer=payload["optimizer"],
        loss_sum=float(payload["loss_sum"]),
        correct=float(payload["correct"]),
        images=int(payload["images"]),
        metrics={k: float(v) for k, v in payload["metrics"].items()},
        rng=rng,
        # Resume points written before these existed have neither.
        correct_top=float(payload.get("correct_top", 0.0)),
        scaler=dict(payload.get("scaler", {})),
    )
