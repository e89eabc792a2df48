"""The task store: every task lives in one SQLite file in the data dir.

SQLite runs in WAL mode with synchronous=NORMAL: a committed transaction survives a
process crash, and readers never block the writer. The store is used from the
server's event loop thread only; each call is one short transaction.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

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
    last_seq        INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_request_id ON tasks(request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE TABLE IF NOT EXISTS memory_peaks (
    -- The largest GPU memory peak measured per task shape, for admission estimates.
    model      TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    image_size INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    peak_bytes INTEGER NOT NULL,
    PRIMARY KEY (model, batch_size, image_size, kind)
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
    "start_time, end_time, metrics, error, request_id, model_path, output_path, last_seq"
)


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

    def close(self) -> None:
        self._db.close()

    def insert(self, task: TaskRecord) -> None:
        self._db.execute(
            f"INSERT INTO tasks ({_COLUMNS}) VALUES ({', '.join('?' * 16)})",
            _row(task),
        )

    def save(self, task: TaskRecord) -> None:
        """Writes every mutable field of an existing task."""
        self._db.execute(
            "UPDATE tasks SET state=?, priority=?, assigned_device=?, start_time=?, end_time=?, "
            "metrics=?, error=?, model_path=?, output_path=?, last_seq=? WHERE task_id=?",
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

    def list(
        self,
        *,
        states: Sequence[TaskState] = (),
        kind: TaskKind | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[TaskRecord], str, int]:
        """A page of tasks, newest first; returns (tasks, next_page_token, total matching)."""
        where: list[str] = []
        args: list[object] = []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(s.value for s in states)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind.value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        (total,) = self._db.execute(f"SELECT COUNT(*) FROM tasks {clause}", args).fetchone()
        page_where = list(where)
        page_args = list(args)
        if page_token:
            page_where.append("id < ?")
            page_args.append(decode_page_token(page_token))
        page_clause = f"WHERE {' AND '.join(page_where)}" if page_where else ""
        rows = self._db.execute(
            f"SELECT id, {_COLUMNS} FROM tasks {page_clause} ORDER BY id DESC LIMIT ?",
            [*page_args, page_size + 1],
        ).fetchall()
        more = len(rows) > page_size
        rows = rows[:page_size]
        token = _encode_page_token(rows[-1][0]) if more and rows else ""
        return [_record(r[1:]) for r in rows], token, int(total)

    def load_limits(self) -> dict[tuple[str, str], int]:
        rows = self._db.execute("SELECT device, kind, value FROM limits").fetchall()
        return {(d, k): int(v) for d, k, v in rows}

    def save_limit(self, device: str, kind: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO limits (device, kind, value) VALUES (?, ?, ?) "
            "ON CONFLICT(device, kind) DO UPDATE SET value=excluded.value",
            (device, kind, value),
        )

    def load_memory_peaks(self) -> Sequence[tuple[str, int, int, str, int]]:
        rows = self._db.execute(
            "SELECT model, batch_size, image_size, kind, peak_bytes FROM memory_peaks"
        ).fetchall()
        return [(str(m), int(b), int(i), str(k), int(p)) for m, b, i, k, p in rows]

    def save_memory_peak(
        self, model: str, batch_size: int, image_size: int, kind: str, peak_bytes: int
    ) -> None:
        self._db.execute(
            "INSERT INTO memory_peaks (model, batch_size, image_size, kind, peak_bytes) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(model, batch_size, image_size, kind) "
            "DO UPDATE SET peak_bytes=MAX(peak_bytes, excluded.peak_bytes)",
            (model, batch_size, image_size, kind, peak_bytes),
        )


class BadPageToken(ValueError):
    """A page token this store did not issue."""


_MAX_ROW_ID = 2**63 - 1


def _encode_page_token(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{row_id}".encode()).decode()


def decode_page_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        prefix, _, value = text.partition(":")
        # Only what _encode_page_token writes: a row id SQLite can hold (a bigger number
        # would make the query raise OverflowError, an INTERNAL for a bad token).
        if prefix != "id" or not (value.isascii() and value.isdigit()):
            raise ValueError(text)
        row_id = int(value)
        if not 1 <= row_id <= _MAX_ROW_ID:
            raise ValueError(text)
        return row_id
    except (ValueError, UnicodeDecodeError):
        raise BadPageToken(f"page_token {token!r} was not issued by this server") from None


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
    )
