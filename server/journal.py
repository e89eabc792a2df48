"""The journal: task records in the store and task events in their logs, and what to
do when the data dir is full.

A write the disk refuses never fails the server: the task it belongs to is marked
(`failure`), and its owner fails it at the next safe point. A task's final record
that cannot be saved is kept here (`unsaved`) and retried by `flush`, so an answer
never goes back in time; what is still unsaved at shutdown is repaired from the
task's log at the next start (`repair_from_log`).
"""

from __future__ import annotations

import logging
import sqlite3

from server.event_log import EventLogs, StoredEvent, read_events
from server.records import TERMINAL_STATES, TaskRecord, TaskState
from server.store import TaskStore

log = logging.getLogger(__name__)

# What writing to the data dir raises when it is full or gone.
STORAGE_ERRORS = (OSError, sqlite3.Error)

_TERMINAL_NAMES = frozenset(state.value for state in TERMINAL_STATES)


class StorageFull(Exception):
    """A new task could not be written; the message says why (for the caller)."""


class Journal:
    """Writes what happens to tasks; remembers what the disk refused."""

    def __init__(self, store: TaskStore, logs: EventLogs) -> None:
        self._store = store
        self._logs = logs
        # Tasks whose state or events could not be written, with the reason.
        self._failures: dict[str, str] = {}
        # Ended tasks whose final record could not be saved yet.
        self._unsaved: dict[str, TaskRecord] = {}

    @property
    def logs(self) -> EventLogs:
        return self._logs

    def record_new(self, task: TaskRecord, message: str) -> None:
        """Writes a new task: its first log line, then its row. A task the disk refuses
        leaves neither behind (raises StorageFull), so a retry with the same request_id
        is a new submit and no restart runs it."""
        self.event(task, "state", message, state=TaskState.QUEUED)
        failure = self._failures.pop(task.task_id, None)
        if failure is None:
            try:
                self._store.insert(task)
            except STORAGE_ERRORS as exc:
                failure = storage_reason(exc)
        if failure is not None:
            self._logs.discard(task.task_id)
            raise StorageFull(f"cannot accept tasks: {failure}")

    def save(self, task: TaskRecord) -> bool:
        """Saves the task's record; on a storage error marks the task, returns False."""
        try:
            self._store.save(task)
        except STORAGE_ERRORS as exc:
            self._write_failed(task, exc)
            return False
        return True

    def save_end(self, task: TaskRecord) -> None:
        """Saves an ended task's record (kept for `flush` if the disk refuses), then
        completes its log, which ends every stream following it."""
        if not self.save(task):
            self._unsaved[task.task_id] = task
        self._failures.pop(task.task_id, None)
        self._logs.close(task.task_id)

    def event(
        self,
        task: TaskRecord,
        type_: str,
        message: str,
        *,
        level: str = "info",
        metrics: dict[str, float] | None = None,
        state: TaskState | None = None,
    ) -> None:
        """Appends an event to the task's log (followers see it at once)."""
        try:
            task_log = self._logs.open(task.task_id)
        except STORAGE_ERRORS as exc:
            self._write_failed(task, exc)
            return
        try:
            event = task_log.append(
                type_, message, level=level, metrics=metrics, state=state.value if state else ""
            )
        except STORAGE_ERRORS as exc:  # the event is in memory and was sent to followers
            self._write_failed(task, exc)
            event = task_log.events[-1]
        task.last_seq = event.seq
        if state is not None:
            # The server's own log: one line per task state change.
            log.log(
                logging.WARNING if level in ("warning", "error") else logging.INFO,
                "task %s %s %s: %s",
                task.task_id,
                task.kind.value,
                state.value,
                message,
            )

    def failure(self, task_id: str) -> str | None:
        """Why the task's writes failed, if they did."""
        return self._failures.get(task_id)

    def unsaved(self, task_id: str) -> TaskRecord | None:
        """An ended task whose final record is not in the store yet."""
        return self._unsaved.get(task_id)

    def flush(self) -> None:
        """Retries what the disk refused (the tick calls this)."""
        for task_id, task in list(self._unsaved.items()):
            try:
                self._store.save(task)
            except STORAGE_ERRORS:
                break  # still full; the next tick tries again
            del self._unsaved[task_id]
        self._logs.flush_pending()

    def close(self) -> None:
        """Ends every open log stream and makes a last try to save what is pending."""
        self._logs.close_all()
        self.flush()
        if self._unsaved or self._logs.flush_pending():
            log.error(
                "could not save the end of tasks %s: the data dir is still full",
                ", ".join(sorted(self._unsaved)) or "(log lines only)",
            )

    def repair_from_log(self, task: TaskRecord) -> bool:
        """If the task's log ends in a terminal state its record missed (the data dir
        was full when it ended), brings the record up to date and returns True."""
        last = self._last_event(task.task_id)
        if last is None or last.state not in _TERMINAL_NAMES:
            return False
        task.state = TaskState(last.state)
        task.end_time = last.time
        task.last_seq = last.seq
        if task.state is not TaskState.SUCCEEDED:
            task.error = last.message
        log.warning("task %s: its log says %s; record repaired", task.task_id, last.state)
        self.save(task)
        return True

    def _last_event(self, task_id: str) -> StoredEvent | None:
        path = self._logs.path(task_id)
        events = read_events(path) if path.exists() else []
        return events[-1] if events else None

    def _write_failed(self, task: TaskRecord, exc: BaseException) -> None:
        reason = f"the data dir cannot be written: {storage_reason(exc)}"
        if task.task_id not in self._failures:
            log.error("task %s: %s", task.task_id, reason)
            self._failures[task.task_id] = reason


def storage_reason(exc: BaseException) -> str:
    """ "No space left on device", "database or disk is full": the words, no errno."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
