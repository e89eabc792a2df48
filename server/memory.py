"""GPU memory planning for tasks: their estimates at submit, their measured peaks after.

The arithmetic lives in `scheduler.memory`; this module feeds it what only the server
knows: model sizes (from the engines' catalogue, a table: nothing is built here), and
peaks kept in the store across restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from engines.catalogue import parameter_count
from scheduler import Kind
from scheduler.devices import is_gpu
from scheduler.memory import MemoryEstimates, MemoryGate, Shape, gb
from server.errors import failed_precondition
from server.store import TaskStore

log = logging.getLogger(__name__)

PEAK_METRIC = "peak_memory_bytes"
OOM_RAISE = 1.5


class MemoryPlanner:
    """Estimates GPU tasks at submit and learns from what they measured."""

    def __init__(self, store: TaskStore, gate: MemoryGate) -> None:
        self._store = store
        self._gate = gate
        self._estimates = MemoryEstimates(
            {
                Shape(model, batch, image, Kind(kind), precision): peak
                for model, batch, image, kind, precision, peak in store.load_memory_peaks()
            }
        )

    def plan(self, shape: Shape, candidates: Sequence[str]) -> tuple[int, tuple[str, ...]]:
        """The task's estimate, and the candidates it could ever fit on. A GPU task that
        fits on none of its GPUs, even when idle, is refused now rather than queued forever."""
        gpus = [d for d in candidates if is_gpu(d)]
        if not gpus:
            return 0, tuple(candidates)
        estimate = self._estimates.estimate(shape, parameter_count(shape.model))
        fitting = tuple(d for d in candidates if self._gate.capacity(d) >= estimate)
        if not fitting:
            biggest = max(self._gate.capacity(d) for d in gpus)
            raise failed_precondition(
                f"{shape.model} at batch_size {shape.batch_size} and image_size "
                f"{shape.image_size} needs ~{gb(estimate)} of GPU memory, more than any GPU "
                f"here can give ({gb(max(0.0, biggest))}); lower batch_size or image_size"
            )
        return estimate, fitting

    def learn(self, shape: Shape, peak_bytes: int) -> None:
        """A task of `shape` measured `peak_bytes` at its peak."""
        if peak_bytes <= 0:
            return
        self._estimates.record(shape, peak_bytes)
        self._save(shape, peak_bytes)

    def _save(self, shape: Shape, peak_bytes: int) -> None:
        self._store.save_memory_peak(
            shape.model,
            shape.batch_size,
            shape.image_size,
            shape.kind.value,
            shape.precision,
            peak_bytes,
        )

    def out_of_memory(self, shape: Shape) -> None:
        """A task of `shape` ran out of GPU memory: its estimate was too low. Raise it by
        half, so the next one waits for more room instead of failing the same way."""
        estimate = self._estimates.estimate(shape, parameter_count(shape.model))
        raised = int(estimate * OOM_RAISE)
        self._estimates.raise_to(shape, raised)
        self._save(shape, raised)
        log.warning("%s ran out of memory; its estimate is now ~%s", shape, gb(raised))
