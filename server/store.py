"""The task store: every task lives in one SQLite file in the data dir.

SQLite runs in WAL mode with synchronous=NORMAL: a committed transaction survives a
process crash, and readers never block the writer. The store is used from the
server's event loop thread only; each call is one short transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from server.page_tokens import (
    decode_kinds_page_token,
    decode_page_token,
    encode_kinds_page_token,
    encode_page_token,
)
from server.records import TaskKind, TaskRecord, TaskState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    -- rowid gives submit order: ties in priority run in this order, lists page by it.
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    device          TEXT NOT NULL,
    assigned_device TEXT NOT NULL DEFAULT '',
    params          TEXT NOT NULL,
    create_time     REAL NOT NULL,
    start_time      REAL,
    end_time        REAL,
    metrics         TEXT NOT NULL DEFAULT '{}',
    error           TEXT NOT NULL DEFAULT '',
    request_id      TEXT,
    model_path      TEXT NOT NULL DEFAULT '',
    output_path     TEXT NOT NULL DEFAULT '',
    last_seq        INTEGER NOT NULL DEFAULT 0,
    preemptions     INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_request_id ON tasks(request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE TABLE IF NOT EXISTS gpu_memory_peaks (
    -- The largest GPU memory peak measured per task shape, for admission estimates.
    model      TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    image_size INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    precision  TEXT NOT NULL,
    peak_bytes INTEGER NOT NULL,
    PRIMARY KEY (model, batch_size, image_size, kind, precision)
);
CREATE TABLE IF NOT EXISTS limits (
    device TEXT NOT NULL,
    kind   TEXT NOT NULL,
    value  INTEGER NOT NULL,
    PRIMARY KEY (device, kind)
);
"""

_COLUMNS = (
    "task_id, kind, state, priority, device, assigned_device, params, create_time, "
    "start_time, end_time, metrics, error, request_id, model_path, output_path, last_seq, "
    "preemptions"
)
# Columns added since the first release, with their definitions: a data dir written by
# an older Tandem gains them when it is opened.
_ADDED_COLUMNS = {"preemptions": "INTEGER NOT NULL DEFAULT 0"}


@dataclass(frozen=True)
class TaskPage:
    """A page of a task list and the totals of its filter, read in one transaction."""

    tasks: tuple[TaskRecord, ...]  # newest first
    next_page_token: str  # "" on the last page
    totals: Mapping[TaskKind, int]  # per kind listed: tasks matching the filter, all pages


class TaskStore:
    """Tasks and persisted limits in SQLite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions explicitly where we need them.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        for column, definition in _ADDED_COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE tasks ADD COLUMN {column} {definition}")
        self._migrate_memory_peaks()

    def _migrate_memory_peaks(self) -> None:
        # Data dirs from before precisions keyed the peaks: every peak there was fp32's.
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
        if "memory_peaks" not in tables:
            return
        with self._db:  # one transaction: copied and dropped, or neither
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR IGNORE INTO gpu_memory_peaks "
                "SELECT model, batch_size, image_size, kind, 'fp32', peak_bytes FROM memory_peaks"
            )
            self._db.execute("DROP TABLE memory_peaks")

    def close(self) -> None:
        self._db.close()

    def insert(self, task: TaskRecord) -> None:
        self._db.execute(
            f"INSERT INTO tasks ({_COLUMNS}) VALUES ({', '.join('?' * 17)})",
            _row(task),
        )

    def save(self, task: TaskRecord) -> None:
        """Writes every mutable field of an existing task."""
        self._db.execute(
            "UPDATE tasks SET state=?, priority=?, assigned_device=?, start_time=?, end_time=?, "
            "metrics=?, error=?, model_path=?, output_path=?, last_seq=?, preemptions=? "
            "WHERE task_id=?",
            (
                task.state.value,
                task.priority,
                task.assigned_device,
                task.start_time,
                task.end_time,
                json.dumps(task.metrics),
                task.error,
                task.model_path,
                task.output_path,
                task.last_seq,
                task.preemptions,
                task.task_id,
            ),
        )

    def get(self, task_id: str) -> TaskRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE task_id=?", (task_id,)
        ).fetchone()
        return _record(row) if row else None

    def by_request_id(self, request_id: str) -> TaskRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE request_id=?", (request_id,)
        ).fetchone()
        return _record(row) if row else None

    def in_states(self, states: Iterable[TaskState]) -> list[TaskRecord]:
        """Tasks in any of `states`, in submit order."""
        values = [s.value for s in states]
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE state IN ({', '.join('?' * len(values))}) "
            "ORDER BY id",
            values,
        ).fetchall()
        return [_record(r) for r in rows]

    def page(
        self,
        *,
        states: Sequence[TaskState] = (),
        kind: TaskKind | None = None,
        page_size: int = 100,
        page_token: str = "",
        per_kind: bool = False,
    ) -> TaskPage:
        """A page of the tasks in `states` (all if empty) of `kind` (all if None), newest
        first, with the totals per kind, from one read so that the two agree.

        `per_kind`: up to `page_size` tasks of each kind listed, each kind resuming after
        its own last task; else up to `page_size` tasks of all of them together.
        Raises `page_tokens.BadPageToken` for a token not issued for this shape of list.
        """
        kinds = tuple(TaskKind) if kind is None else (kind,)
        # The runs of the list, each with the row id it resumes below (None: the newest):
        # one run per kind, or one of all kinds together.
        runs: dict[tuple[TaskKind, ...], int | None]
        if per_kind:
            cursors = decode_kinds_page_token(page_token, kinds) if page_token else {}
            runs = {(k,): cursors.get(k) for k in kinds}
        else:
            runs = {kinds: decode_page_token(page_token) if page_token else None}
        matching = f"state IN ({', '.join('?' * len(states))})" if states else "1"
        values = [s.value for s in states]
        with self._one_read():
            counted = dict(
                self._db.execute(
                    f"SELECT kind, COUNT(*) FROM tasks WHERE {matching} GROUP BY kind", values
                ).fetchall()
            )
            heads = {
                run: self._newest(matching, values, run, before, page_size + 1)
                for run, before in runs.items()
            }
        # A run with nothing left resumes at 0, below every row id (ids start at 1).
        resume = {
            run: rows[page_size - 1][0] if len(rows) > page_size else 0
            for run, rows in heads.items()
        }
        newest = sorted(
            (row for rows in heads.values() for row in rows[:page_size]),
            key=lambda row: row[0],
            reverse=True,
        )
        if not any(resume.values()):
            token = ""
        elif per_kind:
            token = encode_kinds_page_token({run[0]: row for run, row in resume.items()})
        else:
            token = encode_page_token(resume[kinds])
        return TaskPage(
            tasks=tuple(record for _, record in newest),
            next_page_token=token,
            totals={k: int(counted.get(k.value, 0)) for k in kinds},
        )

    def _newest(
        self,
        matching: str,
        values: Sequence[object],
        kinds: Sequence[TaskKind],
        before: int | None,
        limit: int,
    ) -> Sequence[tuple[int, TaskRecord]]:
        """Up to `limit` (row id, task) of `kinds` matching, below row `before`, newest first."""
        where = f"{matching} AND kind IN ({', '.join('?' * len(kinds))})"
        args = [*values, *(k.value for k in kinds)]
        if before is not None:
            where += " AND id < ?"
            args.append(before)
        rows = self._db.execute(
            f"SELECT id, {_COLUMNS} FROM tasks WHERE {where} ORDER BY id DESC LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [(int(row[0]), _record(row[1:])) for row in rows]

    @contextlib.contextmanager
    def _one_read(self) -> Iterator[None]:
        # One transaction: in WAL mode each SELECT in it reads the same snapshot, so a
        # write between them (none today: one thread) could not make them disagree.
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def load_limits(self) -> dict[tuple[str, str], int]:
        rows = self._db.execute("SELECT device, kind, value FROM limits").fetchall()
        return {(d, k): int(v) for d, k, v in rows}

    def save_limit(self, device: str, kind: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO limits (device, kind, value) VALUES (?, ?, ?) "
            "ON CONFLICT(device, kind) DO UPDATE SET value=excluded.value",
            (device, kind, value),
        )

    def load_memory_peaks(self) -> Sequence[tuple[str, int, int, str, str, int]]:
        """(model, batch_size, image_size, kind, precision, peak_bytes) rows."""
        rows = self._db.execute(
            "SELECT model, batch_size, image_size, kind, precision, peak_bytes "
            "FROM gpu_memory_peaks"
        ).fetchall()
        return [(str(m), int(b), int(i), str(k), str(q), int(p)) for m, b, i, k, q, p in rows]

    def save_memory_peak(
        self,
        model: str,
        batch_size: int,
        image_size: int,
        kind: str,
        precision: str,
        peak_bytes: int,
    ) -> None:
        self._db.execute(
            "INSERT INTO gpu_memory_peaks "
            "(model, batch_size, image_size, kind, precision, peak_bytes) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(model, batch_size, image_size, kind, precision) "
            "DO UPDATE SET peak_bytes=MAX(peak_bytes, excluded.peak_bytes)",
            (model, batch_size, image_size, kind, precision, peak_bytes),
        )


def _row(t: TaskRecord) -> tuple[object, ...]:
    return (
        t.task_id,
        t.kind.value,
        t.state.value,
        t.priority,
        t.device,
        t.assigned_device,
        json.dumps(t.params),
        t.create_time,
        t.start_time,
        t.end_time,
        json.dumps(t.metrics),
        t.error,
        t.request_id or None,
        t.model_path,
        t.output_path,
        t.last_seq,
        t.preemptions,
    )


def _record(row: Sequence[object]) -> TaskRecord:
    (
        task_id,
        kind,
        state,
        priority,
        device,
        assigned,
        params,
        create,
        start,
        end,
        metrics,
        error,
        request_id,
        model_path,
        output_path,
        last_seq,
        preemptions,
    ) = row
    return TaskRecord(
        task_id=str(task_id),
        kind=TaskKind(kind),
        state=TaskState(state),
        priority=int(priority),  # type: ignore[call-overload]
        device=str(device),
        assigned_device=str(assigned),
        params=json.loads(str(params)),
        create_time=float(create),  # type: ignore[arg-type]
        start_time=None if start is None else float(start),  # type: ignore[arg-type]
        end_time=None if end is None else float(end),  # type: ignore[arg-type]
        metrics=json.loads(str(metrics)),
        error=str(error),
        request_id=str(request_id or ""),
        model_path=str(model_path),
        output_path=str(output_path),
        last_seq=int(last_seq),  # type: ignore[call-overload]
        preemptions=int(preemptions),  # type: ignore[call-overload]
    )
