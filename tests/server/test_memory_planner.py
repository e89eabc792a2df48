"""The server's memory planner: estimates that survive restarts and learn from failures."""

from __future__ import annotations

from pathlib import Path

from scheduler import Kind, StaticInventory
from scheduler.memory import GIB, MemoryGate, Shape, conservative_estimate
from server.memory import MemoryPlanner, parameter_count
from server.store import TaskStore

TRAIN = Kind.TRAINING


def test_an_out_of_memory_failure_raises_the_estimate_for_good(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tandem.db")
    gate = MemoryGate(StaticInventory.uniform(1, total_bytes=80 * GIB))
    shape = Shape("resnet18", 64, 224, TRAIN)
    before, _ = MemoryPlanner(store, gate).plan(shape, ("cuda:0",))
    assert before == conservative_estimate(shape, parameter_count("resnet18"))
    MemoryPlanner(store, gate).out_of_memory(shape)
    after, _ = MemoryPlanner(store, gate).plan(shape, ("cuda:0",))  # a new planner: from SQLite
    assert after > before * 1.5
    store.close()
