"""Per-task event logs: an append-only JSONL file each, plus live fan-out.

The server process is the only writer, so sequence numbers are dense and ordered.
While a task is active its events are also held in memory and followers read them
by index: a follower is a cursor, not a queue, so a slow one costs nothing to the
task or to other followers and is never dropped; it takes every event past its cursor
at once, so one that fell behind catches up in one batch. Each append wakes the
followers waiting for it through one shared future. After the task ends its log is read back
from the file.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredEvent:
    """One line of a task's log (the JSONL record and the source of `TaskEvent`)."""

    seq: int
    time: float
    type: str  # "log" | "metrics" | "state"
    level: str  # "debug" | "info" | "warning" | "error"
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    # For state events: the TaskState name entered.
    state: str = ""


class TaskLog:
    """The log of one active task."""

    def __init__(self, path: Path, events: list[StoredEvent]) -> None:
        self.path = path
        self.events = events
        self.closed = False
        self._changed: asyncio.Future[None] | None = None
        # Lines the disk refused (full), in order. No later line is written before
        # them, so the file is always a complete prefix of the log.
        self._unwritten: list[str] = []

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    @property
    def unwritten(self) -> int:
        """How many events are in memory but not yet in the file."""
        return len(self._unwritten)

    def append(
        self,
        type_: str,
        message: str,
        *,
        level: str = "info",
        metrics: dict[str, float] | None = None,
        state: str = "",
    ) -> StoredEvent:
        if self.closed:
            raise RuntimeError(f"log {self.path} is closed")
        event = StoredEvent(
            seq=self.last_seq + 1,
            time=time.time(),
            type=type_,
            level=level,
            message=message,
            metrics=dict(metrics or {}),
            state=state,
        )
        # In memory first: followers get the event even if the disk refuses it.
        self.events.append(event)
        self._wake()
        self._unwritten.append(json.dumps(asdict(event), separators=(",", ":")) + "\n")
        self.flush()
        return event

    def flush(self) -> None:
        """Writes the events the disk refused so far, in order; OSError if it still
        refuses (they stay in memory for the next try)."""
        if self._unwritten:
            self._write("".join(self._unwritten))
            self._unwritten.clear()

    def _write(self, line: str) -> None:
        """Appends one line, or nothing: a write cut short (a full disk) is undone so
        the file never holds a torn line that would hide the lines after it. Raises
        the OSError."""
        # Opened per append: a file descriptor per queued task would run out long
        # before the queue does.
        # Unbuffered, so nothing is left in a buffer to be written after the undo.
        with self.path.open("ab", buffering=0) as f:
            start = f.tell()
            rest = memoryview(line.encode("utf-8"))
            try:
                while rest:
                    rest = rest[f.write(rest) or 0 :]
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(start)
                raise

    def close(self) -> None:
        """Marks the log complete (after its terminal state event) and syncs it to disk."""
        if self.closed:
            return
        self.closed = True
        self._wake()
        try:
            self.flush()
            with self.path.open("a", encoding="utf-8") as f:
                os.fsync(f.fileno())
        except OSError as exc:  # kept in memory by EventLogs until a flush succeeds
            logger.warning("could not write %s: %s", self.path, exc.strerror or exc)

    async def wait_beyond(self, seq: int) -> None:
        """Returns once the log holds an event after `seq`, or is closed."""
        while len(self.events) <= seq and not self.closed:
            if self._changed is None or self._changed.done():
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None


class EventLogs:
    """All task logs of the data dir: active ones in memory, finished ones on disk."""

    def __init__(self, tasks_dir: Path) -> None:
        self._dir = tasks_dir
        self._active: dict[str, TaskLog] = {}
        # Closed logs whose last events the disk refused: served from memory and
        # written by `flush_pending` once there is room.
        self._unflushed: dict[str, TaskLog] = {}

    def path(self, task_id: str) -> Path:
        return self._dir / task_id / "events.jsonl"

    def open(self, task_id: str) -> TaskLog:
        """The active log of a task, created or reloaded from its file."""
        log = self._active.get(task_id)
        if log is None:
            path = self.path(task_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            log = TaskLog(path, read_events(path, repair=True))
            self._active[task_id] = log
        return log

    def active(self, task_id: str) -> TaskLog | None:
        return self._active.get(task_id)

    def close(self, task_id: str) -> None:
        log = self._active.pop(task_id, None)
        if log is not None:
            log.close()
            if log.unwritten:
                self._unflushed[task_id] = log

    def discard(self, task_id: str) -> None:
        """Forgets a log and its folder (a submit that was refused after all)."""
        log = self._active.pop(task_id, None)
        if log is not None:
            log.closed = True
            log._wake()
        shutil.rmtree(self.path(task_id).parent, ignore_errors=True)

    def flush_pending(self) -> int:
        """Writes what the disk refused earlier, for every log; returns how many logs
        still hold unwritten events."""
        for log in [*self._active.values(), *self._unflushed.values()]:
            with contextlib.suppress(OSError):
                log.flush()
        for task_id, log in list(self._unflushed.items()):
            if not log.unwritten:
                del self._unflushed[task_id]
        return sum(1 for log in self._active.values() if log.unwritten) + len(self._unflushed)

    def close_all(self) -> None:
        for task_id in list(self._active):
            self.close(task_id)

    async def follow(
        self, task_id: str, from_seq: int, follow: bool
    ) -> AsyncIterator[list[StoredEvent]]:
        """Events with `seq >= from_seq`; with `follow`, live ones until the log closes.
        Yields them in batches, in order: each batch is every event there was to send
        when it was taken (the history at first, then what arrived while the follower
        waited or was sending), never empty."""
        log = self._active.get(task_id) or self._unflushed.get(task_id)
        if log is None:
            history = [event for event in read_events(self.path(task_id)) if event.seq >= from_seq]
            if history:
                yield history
            return
        # Index of the next event to send (seqs are dense unless a crash lost lines).
        cursor = bisect.bisect_left(log.events, from_seq, key=lambda e: e.seq)
        while True:
            if cursor < len(log.events):
                batch = log.events[cursor:]
                cursor += len(batch)
                yield batch
                continue  # more may have come while the batch was sent
            if log.closed or not follow:
                return
            await log.wait_beyond(cursor)


def read_events(path: Path, *, repair: bool = False) -> list[StoredEvent]:
    """Reads a JSONL log. A torn last line (a crash mid-write) is dropped, and with
    `repair` cut from the file so the next append starts on a clean line."""
    if not path.exists():
        return []
    events: list[StoredEvent] = []
    good_bytes = 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                events.append(StoredEvent(**json.loads(raw)))
            except (ValueError, TypeError):
                break
            good_bytes += len(raw)
    if repair and good_bytes != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return events
