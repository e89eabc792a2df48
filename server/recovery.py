"""Recovery: every way a task goes back into the queue, through one `queue_again`.

- After a restart (`recover`): queued tasks queue again in their order; interrupted
  training resumes from its last checkpoint (or fails if it has none); interrupted
  inference starts over. A task whose log shows it ended is repaired, not rerun.
- When a job ended through no fault of its own (`requeue`): one that never began (its
  device could not take it) waits again, less that device if it is held now; training
  whose machine went away resumes from its last checkpoint on the other nodes.
- A preempted training (the task manager's `_preempted`) waits again with the aging it
  had earned, and resumes from the resume point it saved (`resume`).

Recovery decides and queues; the task manager starts what is admitted (its `start`,
called at the instant of admission) and ends what cannot be queued again, so a task's
end is written in one place.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engines.checkpoints import latest_checkpoint, resume_point_path
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


class RequeueRefused(Exception):
    """A task could not be queued again; the message says why."""


# Starts an admitted task; called by the dispatcher in the instant of its admission.
Start = Callable[[TaskRecord, Admission], None]


@dataclass(frozen=True)
class Unfinished:
    """A task an earlier run left: why it goes back in the queue (`note`) and where it
    may run, or why it fails instead (`failure`, after `note` if it has one)."""

    task: TaskRecord
    note: str = ""
    candidates: tuple[str, ...] = ()
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

    def resume(self, task: TaskRecord) -> tuple[str, str] | None:
        """Where a training task carries on from, if it left anything: (where, in words;
        the file). The newer of the resume point a preemption saved (exact, mid-epoch)
        and the last epoch checkpoint: a run resumed from a resume point and interrupted
        again after finishing an epoch carries on from that epoch instead."""
        folder = str(self._config.task_dir(task.task_id))
        epoch = latest_checkpoint(folder)
        point = resume_point_path(folder)
        if os.path.exists(point) and (
            epoch is None or os.path.getmtime(point) >= os.path.getmtime(epoch[1])
        ):
            return "where it was preempted", point
        if epoch is None:
            return None
        return f"from epoch {epoch[0]}", epoch[1]

    def queue_again(
        self,
        task: TaskRecord,
        note: str,
        candidates: Sequence[str],
        start: Start,
        *,
        submit_time: float | None = None,
        returning: bool = False,
    ) -> asyncio.Future[Admission]:
        """Puts `task` back in the queue for `candidates` with a fresh memory estimate;
        its log says `note`; `start` starts it when admitted; `submit_time` (on the
        arbiter's clock) keeps the aging it had earned. Raises RequeueRefused: before
        any change if it fits on none of them, else after the task was marked QUEUED
        (its owner then fails it)."""
        try:
            memory_bytes, fitting = self._planner.plan(task.shape(), candidates)
        except ServiceError as exc:
            raise RequeueRefused(exc.message) from None
        self._dispatcher.release(task.task_id)  # a job that never began may hold its slot
        self.mark_queued(task, note)
        request = Request(
            job_id=task.task_id,
            kind=task.kind.slot,
            priority=task.priority,
            devices=fitting,
            submit_time=submit_time,
            memory_bytes=memory_bytes,
            preemptible=task.preemptible,
        )
        try:
            return self._dispatcher.queue(
                request, start=lambda a: start(task, a), returning=returning
            )
        except (QueueFull, ValueError) as exc:
            raise RequeueRefused(str(exc)) from None

    def requeue_preempted(
        self, task: TaskRecord, message: str, start: Start
    ) -> asyncio.Future[Admission]:
        """Records a training that yielded to a more urgent task (PREEMPTED, with
        `message`), then queues it again with the aging it had earned before it last
        started (its waits so far, on the arbiter's clock), to resume where it stopped.
        Raises RequeueRefused like `queue_again`."""
        task.preemptions += 1
        task.state = TaskState.PREEMPTED
        self._journal.save(task)
        self._journal.event(task, "state", message, state=TaskState.PREEMPTED, level="warning")
        resume = self.resume(task)
        note = f"queued again; will resume {resume[0]}" if resume else "queued again"
        return self.queue_again(
            task,
            note,
            self._devices.candidates(task.device),
            start,
            submit_time=self._dispatcher.arbiter.clock() - task.waited_s,
            returning=True,
        )

    def mark_queued(self, task: TaskRecord, note: str) -> None:
        """Records that `task` waits again (a state event with `note`); for a task that
        was waiting already, `note` is only logged."""
        if task.state is TaskState.QUEUED:
            self._journal.event(task, "log", note)  # (a restart: it waited already)
            return
        task.state = TaskState.QUEUED
        task.assigned_device = ""
        task.start_time = None
        task.queued_at = time.time()
        self._journal.save(task)
        self._journal.event(task, "state", note, state=TaskState.QUEUED, level="warning")

    def unfinished(self) -> list[Unfinished]:
        """The tasks an earlier run of the server left unfinished, in submit order; a
        task whose log shows it ended is repaired instead."""
        found: list[Unfinished] = []
        for task in self._store.in_states([TaskState.RUNNING]):
            if self._journal.repair_from_log(task):
                continue
            if task.kind is TaskKind.TRAINING:
                resume = self.resume(task)
                if resume is None:
                    found.append(Unfinished(task, failure="interrupted by restart"))
                    continue
                note = f"interrupted by restart; will resume {resume[0]}"
            else:
                note = "interrupted by restart; queued to run again"
            found.append(Unfinished(task, note, self._devices.candidates(task.device)))
        # PREEMPTED: stopped between yielding and being queued again (a crash, a full disk).
        for task in self._store.in_states([TaskState.QUEUED, TaskState.PREEMPTED]):
            if not self._journal.repair_from_log(task):
                note = "requeued after a server restart"
                found.append(Unfinished(task, note, self._devices.candidates(task.device)))
        found.sort(key=lambda u: u.task.create_time)
        return [
            u
            if u.failure or u.candidates
            else Unfinished(
                u.task, u.note, failure=f"device {u.task.device} is no longer available"
            )
            for u in found
        ]

    def requeue(
        self, task: TaskRecord, outcome: JobOutcome, start: Start
    ) -> asyncio.Future[Admission] | None:
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
            resume = self.resume(task)
            if task.kind is not TaskKind.TRAINING or resume is None or not lost:
                return None
            candidates = tuple(d for d in candidates if split_node(d)[0] != lost)
            note = f"{why}; will resume {resume[0]} elsewhere"
        if not candidates:
            return None
        try:
            return self.queue_again(task, note, candidates, start)
        except RequeueRefused as exc:
            if task.state is not TaskState.QUEUED:
                return None  # refused before any change: the job's own outcome stands
            raise RequeueRefused(f"{why}; could not be queued again: {exc}") from None
