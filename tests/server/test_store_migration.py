"""A data dir written by a Tandem from before a column existed opens, and its tasks read
and save, with the column added (`TaskStore`'s `_ADDED_COLUMNS`)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from server.records import TaskKind, TaskRecord, TaskState
from server.store import TaskStore


def test_an_older_data_dir_gains_the_preemptions_column(tmp_path: Path) -> None:
    path = tmp_path / "tandem.db"
    store = TaskStore(path)
    task = TaskRecord(
        task_id="old",
        kind=TaskKind.TRAINING,
        state=TaskState.QUEUED,
        priority=7,
        device="cpu",
        params={"model": "resnet18", "batch_size": 8, "image_size": 32},
        create_time=time.time(),
    )
    store.insert(task)
    store.close()
    # As the release before preemption wrote it: no such column.
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE tasks DROP COLUMN preemptions")
        assert "preemptions" not in {row[1] for row in db.execute("PRAGMA table_info(tasks)")}

    reopened = TaskStore(path)
    old = reopened.get("old")
    assert old is not None and old.preemptions == 0
    old.preemptions = 2
    reopened.save(old)
    again = reopened.get("old")
    assert again is not None and again.preemptions == 2
    reopened.close()


def test_an_older_data_dir_keeps_its_memory_peaks_as_fp32(tmp_path: Path) -> None:
    path = tmp_path / "tandem.db"
    # As the release before precisions wrote it: peaks keyed by shape alone.
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE memory_peaks (model TEXT NOT NULL, batch_size INTEGER NOT NULL, "
            "image_size INTEGER NOT NULL, kind TEXT NOT NULL, peak_bytes INTEGER NOT NULL, "
            "PRIMARY KEY (model, batch_size, image_size, kind))"
        )
        db.executemany(
            "INSERT INTO memory_peaks VALUES (?, ?, ?, ?, ?)",
            [("resnet18", 64, 224, "training", 3_000_000_000), ("vgg16", 8, 224, "inference", 7)],
        )

    store = TaskStore(path)
    assert sorted(store.load_memory_peaks()) == [
        ("resnet18", 64, 224, "training", "fp32", 3_000_000_000),
        ("vgg16", 8, 224, "inference", "fp32", 7),
    ]
    store.close()
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "memory_peaks" not in tables and "gpu_memory_peaks" in tables

    again = TaskStore(path)  # a second open finds nothing left to migrate
    assert len(again.load_memory_peaks()) == 2
    again.close()
