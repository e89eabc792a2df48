"""Recovery: every way a task goes back into the queue, through one `queue_again`.

- After a restart (`recover`): queued tasks queue again in their order; interrupted
  training resumes from its last checkpoint (or fails if it has none); interrupted
  inference starts over. A task whose log shows it ended is repaired, not rerun.
- When a job ended through no fault of its own (`requeue`): one that never began (its
  device could not take it) waits again, less that device if it is held now; training
  whose machine went away resumes from its last checkpoint on the other nodes.

Recovery decides and queues; the task manager starts what is admitted and ends what
cannot be queued again, so a task's end is written in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from engines.checkpoints import latest_checkpoint
from engines.executor import JobOutcome
from scheduler import Admission, QueueFull, Request
from scheduler.devices import split_node
from server.config import ServerConfig
from server.device_registry import DeviceRegistry
from server.dispatcher import Dispatcher
from server.errors import ServiceError
from server.journal import Journal
from server.memory import MemoryPlanner
from server.records import TaskKind, TaskRecord, TaskState
from server.store import TaskStore

log = logging.getLogger(__name__)


class RequeueRefused(Exception):
    """A task could not be queued again; the message says why."""


@dataclass(frozen=True)
class Recovered:
    """A task brought back: its admission to wait for, or why it failed instead."""

    task: TaskRecord
    admission: asyncio.Future[Admission] | None
    failure: str = ""


class Recovery:
    """Puts tasks back in the queue (see the module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        store: TaskStore,
        journal: Journal,
        dispatcher: Dispatcher,
        devices: DeviceRegistry,
        planner: MemoryPlanner,
    ) -> None:
        self._config = config
        self._store = store
        self._journal = journal
        self._dispatcher = dispatcher
        self._devices = devices
        self._planner = planner

    def checkpoint(self, task: TaskRecord) -> tuple[int, str] | None:
        """(epoch, path) of the task's last checkpoint, if it left one."""
        return latest_checkpoint(str(self._config.task_dir(task.task_id)))

    def queue_again(
        self, task: TaskRecord, note: str, candidates: Sequence[str]
    ) -> asyncio.Future[Admission]:
        """Puts `task` back in the queue for `candidates` with a fresh memory estimate;
        its log says `note`. Raises RequeueRefused: before any change if it fits on
        none of them, else after the task was marked QUEUED (its owner then fails it)."""
        try:
            memory_bytes, fitting = self._planner.plan(task.shape(), candidates)
        except ServiceError as exc:
            raise RequeueRefused(exc.message) from None
        self._dispatcher.release(task.task_id)  # a job that never began may hold its slot
        if task.state is TaskState.QUEUED:
            self._journal.event(task, "log", note)
        else:
            task.state = TaskState.QUEUED
            task.assigned_device = ""
            task.start_time = None
            self._journal.save(task)
            self._journal.event(task, "state", note, state=TaskState.QUEUED, level="warning")
        request = Request(
            job_id=task.task_id,
            kind=task.kind.slot,
            priority=task.priority,
            devices=fitting,
            memory_bytes=memory_bytes,
        )
        try:
            return self._dispatcher.queue(request)
        except (QueueFull, ValueError) as exc:
            raise RequeueRefused(str(exc)) from None

    def recover(self) -> list[Recovered]:
        """Brings back the tasks an earlier run of the server left unfinished."""
        recovered: list[Recovered] = []
        notes: dict[str, str] = {}
        tasks: list[TaskRecord] = []
        for task in self._store.in_states([TaskState.RUNNING]):
            if self._journal.repair_from_log(task):
                continue
            if task.kind is TaskKind.TRAINING:
                checkpoint = self.checkpoint(task)
                if checkpoint is None:
                    recovered.append(Recovered(task, None, "interrupted by restart"))
                    continue
                epoch = checkpoint[0]
                notes[task.task_id] = f"interrupted by restart; will resume from epoch {epoch}"
            else:
                notes[task.task_id] = "interrupted by restart; queued to run again"
            tasks.append(task)
        for task in self._store.in_states([TaskState.QUEUED]):
            if not self._journal.repair_from_log(task):
                notes[task.task_id] = "requeued after a server restart"
                tasks.append(task)
        for task in sorted(tasks, key=lambda t: t.create_time):  # in submit order
            candidates = self._devices.candidates(task.device)
            if not candidates:
                reason = f"device {task.device} is no longer available"
                recovered.append(Recovered(task, None, reason))
                continue
            try:
                future = self.queue_again(task, notes[task.task_id], candidates)
            except RequeueRefused as exc:
                reason = f"could not be requeued after a restart: {exc}"
                recovered.append(Recovered(task, None, reason))
                continue
            recovered.append(Recovered(task, future))
        return recovered

    def requeue(self, task: TaskRecord, outcome: JobOutcome) -> asyncio.Future[Admission] | None:
        """Queues again a task whose job ended through no fault of its own (see the
        module docstring); None if it cannot be. Raises RequeueRefused after the task
        was marked QUEUED, if the queue would not take it."""
        why = outcome.error
        lost = split_node(task.assigned_device)[0]
        candidates = self._devices.candidates(task.device)
        if outcome.not_started:
            kind = task.kind.slot
            candidates = tuple(
                d
                for d in candidates
                if d != task.assigned_device or self._devices.limits(d).of(kind)
            )
            note = f"{why}; queued again"
        else:
            checkpoint = self.checkpoint(task)
            if task.kind is not TaskKind.TRAINING or checkpoint is None or not lost:
                return None
            candidates = tuple(d for d in candidates if split_node(d)[0] != lost)
            note = f"{why}; will resume from epoch {checkpoint[0]} elsewhere"
        if not candidates:
            return None
        try:
            return self.queue_again(task, note, candidates)
        except RequeueRefused as exc:
            if task.state is not TaskState.QUEUED:
                return None  # refused before any change: the job's own outcome stands
            raise RequeueRefused(f"{why}; could not be queued again: {exc}") from None
