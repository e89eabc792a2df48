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


def test_a_peak_learned_in_fp32_is_not_the_estimate_in_bf16(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tandem.db")
    gate = MemoryGate(StaticInventory.uniform(1, total_bytes=80 * GIB))
    fp32 = Shape("resnet18", 64, 224, TRAIN, "fp32")
    bf16 = Shape("resnet18", 64, 224, TRAIN, "bf16")
    # Far above either conservative estimate, so borrowing it would show.
    MemoryPlanner(store, gate).learn(fp32, 40 * GIB)
    planner = MemoryPlanner(store, gate)  # a new planner: the peak comes from SQLite
    learned, _ = planner.plan(fp32, ("cuda:0",))
    assert learned > 40 * GIB
    estimate, _ = planner.plan(bf16, ("cuda:0",))
    assert estimate == conservative_estimate(bf16, parameter_count("resnet18"))
    assert estimate < conservative_estimate(fp32, parameter_count("resnet18")) < learned
    store.close()
