"""The task manager: the one place where a task changes state.

It accepts validated submissions, queues them through the dispatcher, hands admitted
ones to the executor, records what the executor reports, and frees their slots when
they end. Every change is written through the journal before anyone can see it.
All methods run on the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence

from engines.executor import Executor, JobOutcome, Outcome
from engines.jobs import InferenceJob, JobEvent, TrainingJob
from scheduler import Admission, QueueFull, Request, WaitingInfo
from scheduler.devices import is_gpu
from server.config import ServerConfig
from server.device_registry import DeviceRegistry
from server.dispatcher import DeviceGone, Dispatcher
from server.errors import failed_precondition, not_found, resource_exhausted
from server.event_log import StoredEvent
from server.jobs import job_for
from server.journal import STORAGE_ERRORS, Journal, StorageFull
from server.memory import PEAK_METRIC, MemoryPlanner
from server.metrics import Metrics
from server.model_registry import ModelRegistry
from server.preemption import Preemptions
from server.records import TaskKind, TaskRecord, TaskState, success_message
from server.recovery import Recovery, RequeueRefused
from server.store import TaskPage, TaskStore
from server.thread_share import Role, ThreadShare
from server.validation import Submission

log = logging.getLogger(__name__)

_STATE_LEVEL = {
    TaskState.SUCCEEDED: "info",
    TaskState.FAILED: "error",
    TaskState.CANCELLED: "warning",
}


class TaskManager:
    """Owns the life cycle of every task."""

    def __init__(
        self,
        config: ServerConfig,
        store: TaskStore,
        journal: Journal,
        dispatcher: Dispatcher,
        devices: DeviceRegistry,
        recovery: Recovery,
        executor: Executor,
        threads: ThreadShare,
        planner: MemoryPlanner,
        metrics: Metrics,
        registry: ModelRegistry,
    ) -> None:
        self._config = config
        self._store = store
        self._journal = journal
        self._dispatcher = dispatcher
        self._devices = devices
        self._recovery = recovery
        self._executor = executor
        self._threads = threads
        self._planner = planner
        self._metrics = metrics
        self._registry = registry
        # QUEUED and RUNNING tasks; ended tasks are read from the store.
        self._active: dict[str, TaskRecord] = {}
        self._cancel_requested: set[str] = set()
        self._preemptions = Preemptions(
            config, dispatcher, executor, journal, metrics, tasks=self._active
        )
        self._preempting: asyncio.Task[None] | None = None
        # Set by close(): what workers report afterwards is left for the next start.
        self._closing = False

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices tasks may ask for now."""
        return self._devices.devices

    async def start(self) -> None:
        """Brings back the tasks of an earlier run on this data dir."""
        for unfinished in self._recovery.unfinished():
            task = unfinished.task
            self._active[task.task_id] = task
            failure = unfinished.failure
            if not failure:
                try:
                    admission = self._recovery.queue_again(
                        task, unfinished.note, unfinished.candidates, self._start
                    )
                except RequeueRefused as exc:
                    failure = f"could not be requeued after a restart: {exc}"
            if failure:
                if unfinished.note and task.state is TaskState.RUNNING:
                    # An interrupted task says where it stood before why it fails.
                    self._recovery.mark_queued(task, unfinished.note)
                self._end(task, TaskState.FAILED, failure)
                continue
            self._watch_admission(task, admission)
        self._preempting = asyncio.create_task(self._preemptions.watch())

    async def close(self) -> None:
        """Stops recording and ends every open Logs stream (followers resume with `from_seq`
        against the next server). Running tasks stay RUNNING: the next start decides."""
        self._closing = True
        if self._preempting is not None:
            self._preempting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._preempting
        self._journal.close()

    # -- submit, read, cancel --------------------------------------------------------

    def submit(self, kind: TaskKind, submission: Submission) -> TaskRecord:
        """Stores a new task, queues it, and returns it as it was accepted (QUEUED)."""
        if submission.request_id:
            earlier = self._store.by_request_id(submission.request_id)
            if earlier is not None:
                return self.get(earlier.task_id)
        task = TaskRecord(
            task_id=uuid.uuid4().hex[:16],
            kind=kind,
            state=TaskState.QUEUED,
            priority=submission.priority,
            device=submission.device,
            params=dict(submission.params),
            create_time=time.time(),
            request_id=submission.request_id,
        )
        memory_bytes, candidates = self._planner.plan(task.shape(), submission.candidates)
        # Check room first so a refused task leaves no trace.
        if self._dispatcher.arbiter.statistics().total_waiting >= self._config.max_waiting:
            raise resource_exhausted(
                f"the queue is full ({self._config.max_waiting} waiting tasks); retry later"
            )
        try:
            self._journal.record_new(
                task, f"queued: {kind.value} at priority {task.priority} on {task.device}"
            )
        except StorageFull as exc:
            raise resource_exhausted(str(exc)) from None
        self._active[task.task_id] = task
        accepted = self._snapshot(task)
        request = Request(
            task.task_id,
            kind.slot,
            task.priority,
            candidates,
            memory_bytes=memory_bytes,
            preemptible=task.preemptible,
        )
        try:
            admission = self._dispatcher.queue(request, start=lambda a: self._start(task, a))
        except QueueFull as exc:
            self._end(task, TaskState.FAILED, f"refused: {exc}")
            raise resource_exhausted(str(exc)) from None
        self._watch_admission(task, admission)
        return accepted

    def get(self, task_id: str) -> TaskRecord:
        task = self._active.get(task_id) or self._journal.unsaved(task_id)
        if task is not None:
            return self._snapshot(task)
        stored = self._store.get(task_id)
        if stored is None:
            raise not_found(f"task {task_id!r} does not exist")
        return stored

    def page(
        self,
        *,
        states: Sequence[TaskState],
        kind: TaskKind | None,
        page_size: int,
        page_token: str,
        per_kind: bool = False,
    ) -> TaskPage:
        """A page of tasks as they are now and the totals per kind (`TaskStore.page`)."""
        page = self._store.page(
            states=states, kind=kind, page_size=page_size, page_token=page_token, per_kind=per_kind
        )
        live = [
            self._active.get(t.task_id) or self._journal.unsaved(t.task_id) or t for t in page.tasks
        ]
        if states:
            # The store filtered by what it holds; a task whose latest change it has not
            # seen yet (a full disk) is filtered by what is true now. The totals may lag.
            live = [t for t in live if t.state in states]
        return dataclasses.replace(page, tasks=tuple(self._snapshot(t) for t in live))

    def cancel(self, task_id: str) -> TaskRecord:
        task = self._active.get(task_id)
        if task is None:
            ended = self.get(task_id)  # NOT_FOUND if there is no such task
            raise failed_precondition(
                f"task {task_id} has already ended ({ended.state.value}); nothing to cancel"
            )
        if task.state is TaskState.QUEUED:
            self._dispatcher.withdraw(task_id)
            self._end(task, TaskState.CANCELLED, "cancelled while queued")
            return self._snapshot(task)
        if task_id not in self._cancel_requested:
            self._cancel_requested.add(task_id)
            self._journal.event(
                task, "log", "cancel requested; stopping at the next batch", level="warning"
            )
            self._executor.cancel(task_id)
        return self._snapshot(task)

    def follow(self, task_id: str, from_seq: int, follow: bool) -> AsyncIterator[list[StoredEvent]]:
        """The task's events in batches (see `EventLogs.follow`)."""
        self.get(task_id)  # NOT_FOUND before the stream starts
        return self._journal.logs.follow(task_id, from_seq, follow)

    def waiting_info(self, task_id: str) -> WaitingInfo | None:
        """Where a queued task stands (position, reason, effective priority), else None."""
        return self._dispatcher.arbiter.waiting_info(task_id)

    def waiting_infos(self) -> Mapping[str, WaitingInfo]:
        """The same for every queued task, in one pass (for pages of tasks)."""
        return self._dispatcher.arbiter.waiting_infos()

    # -- what the executor reports (JobSink) -----------------------------------------

    def job_event(self, task_id: str, event: JobEvent) -> None:
        task = self._active.get(task_id)
        if task is None or self._closing:
            return
        if event.metrics:
            task.metrics.update(event.metrics)
            self._journal.save(task)
        self._journal.event(
            task,
            "metrics" if event.metrics else "log",
            event.message,
            level=event.level.value,
            metrics=event.metrics,
        )
        if self._journal.failure(task_id) and task_id not in self._cancel_requested:
            # Running on would produce work nobody can see or resume: stop it.
            self._cancel_requested.add(task_id)
            self._executor.cancel(task_id)

    def job_finished(self, task_id: str, outcome: JobOutcome) -> None:
        # The job has stopped computing, whatever comes of its task: its cores go to
        # the jobs beside it.
        self._threads.leave(task_id)
        task = self._active.get(task_id)
        if task is None or self._closing:
            return
        queued_again = False
        if outcome.outcome is not Outcome.PREEMPTED:
            self._preemptions.forget(task_id)  # asked to yield, it ended otherwise
        try:
            if outcome.interrupted or outcome.not_started:
                queued_again = self._queue_again(task, outcome)
                if queued_again:
                    return
            if outcome.outcome is Outcome.PREEMPTED and task_id not in self._cancel_requested:
                queued_again = self._preempted(task, outcome)
                return
            self._cancel_requested.discard(task_id)
            if outcome.result is not None:
                task.metrics.update(outcome.result.metrics)
                peak = outcome.result.metrics.get(PEAK_METRIC, 0)
                with contextlib.suppress(*STORAGE_ERRORS):  # a lost sample, not a lost task
                    self._planner.learn(task.shape(), int(peak))
                task.model_path = outcome.result.model_path or task.model_path
                task.output_path = outcome.result.output_path or task.output_path
            failure = self._journal.failure(task_id)
            if outcome.outcome is Outcome.SUCCEEDED:
                self._registry.publish_model_of(task, self._journal)  # never raises
                self._end(task, TaskState.SUCCEEDED, success_message(task.metrics))
            elif failure is not None:
                self._end(task, TaskState.FAILED, failure)
            elif outcome.outcome in (Outcome.CANCELLED, Outcome.PREEMPTED):
                # (PREEMPTED here: a cancel came while it yielded; the cancel wins.)
                self._end(task, TaskState.CANCELLED, outcome.error or "cancelled")
            else:
                if "out of memory" in outcome.error and is_gpu(task.assigned_device):
                    with contextlib.suppress(*STORAGE_ERRORS):
                        self._planner.out_of_memory(task.shape())
                self._end(task, TaskState.FAILED, outcome.error or "failed for an unknown reason")
        finally:
            # Whatever went wrong recording the end, the slot must not leak. (A task
            # queued again may even be running anew by now: its slot is its new one.)
            if not queued_again:
                self._active.pop(task_id, None)
                self._journal.logs.close(task_id)
                self._dispatcher.release(task_id)

    # -- internals -------------------------------------------------------------------

    def _preempted(self, task: TaskRecord, outcome: JobOutcome) -> bool:
        """A training that yielded to a more urgent task: PREEMPTED, then QUEUED again to
        resume where it stopped. True when it is queued again (False: it has failed)."""
        message = self._preemptions.yielded(task, outcome)
        try:
            admission = self._recovery.requeue_preempted(task, message, self._start)
        except RequeueRefused as exc:
            self._dispatcher.release(task.task_id)
            self._end(task, TaskState.FAILED, f"preempted, then could not be queued again: {exc}")
            return False
        self._watch_admission(task, admission)
        return True

    def _queue_again(self, task: TaskRecord, outcome: JobOutcome) -> bool:
        """Queues again a job that ended through no fault of its own; False if not.
        True also when queueing it failed it: either way its end is dealt with."""
        if task.task_id in self._cancel_requested:
            return False
        try:
            admission = self._recovery.requeue(task, outcome, self._start)
        except RequeueRefused as exc:
            self._end(task, TaskState.FAILED, str(exc))  # its slot was given back to queue it
            return True
        if admission is None:
            return False
        self._watch_admission(task, admission)
        return True

    def _watch_admission(self, task: TaskRecord, admission: asyncio.Future[Admission]) -> None:
        """Fails the task if it can never be admitted (the devices it could use left);
        its admission itself starts it (`_start`, called by the dispatcher)."""

        def not_admitted(future: asyncio.Future[Admission]) -> None:
            error = None if future.cancelled() else future.exception()
            if isinstance(error, DeviceGone) and self._active.get(task.task_id) is task:
                self._end(task, TaskState.FAILED, f"{error}; the task could run only there")

        admission.add_done_callback(not_admitted)

    def _start(self, task: TaskRecord, admission: Admission) -> None:
        if self._closing:
            return  # stopping: the task stays QUEUED for the next start
        if self._active.get(task.task_id) is not task or task.state is not TaskState.QUEUED:
            # Cannot happen while the dispatcher and the manager agree; never run twice.
            log.error("admission for unknown or non-queued task %s", task.task_id)
            self._dispatcher.release(task.task_id)
            return
        try:
            task.state = TaskState.RUNNING
            task.assigned_device = admission.device
            task.start_time = time.time()
            queued_at = task.create_time if task.queued_at is None else task.queued_at
            task.waited_s += max(0.0, task.start_time - queued_at)
            self._journal.save(task)
            running = f"running on {admission.device}"
            self._journal.event(task, "state", running, state=TaskState.RUNNING)
            failure = self._journal.failure(task.task_id)
            if failure is not None:
                self.job_finished(task.task_id, JobOutcome(Outcome.FAILED, error=failure))
                return
            self._executor.submit(self._job(task), self)
        except Exception as exc:
            log.exception("could not start task %s", task.task_id)
            self.job_finished(
                task.task_id, JobOutcome(Outcome.FAILED, error=f"could not start: {exc}")
            )

    def _job(self, task: TaskRecord) -> TrainingJob | InferenceJob:
        resume = self._recovery.resume(task) if task.kind is TaskKind.TRAINING else None
        return job_for(
            task,
            output_dir=str(self._config.task_dir(task.task_id)),
            num_threads=self._threads.join(task.task_id, task.assigned_device, Role.BATCH),
            # A task preempted, or interrupted by a restart, carries on where it stopped.
            resume_from=resume[1] if resume else "",
        )

    def _end(self, task: TaskRecord, state: TaskState, message: str) -> None:
        task.state = state
        task.end_time = time.time()
        if state is not TaskState.SUCCEEDED:
            task.error = message
        self._journal.event(task, "state", message, state=state, level=_STATE_LEVEL[state])
        self._journal.save_end(task)
        self._active.pop(task.task_id, None)
        self._metrics.task_ended(task)

    @staticmethod
    def _snapshot(task: TaskRecord) -> TaskRecord:
        """A copy for callers: later changes to the live record do not leak into replies."""
        return TaskRecord(**{**task.__dict__, "metrics": dict(task.metrics)})
