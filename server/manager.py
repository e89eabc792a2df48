"""The task manager: the one place where a task changes state.

It accepts validated submissions, queues them in the arbiter, hands admitted ones to
the executor, records what they report, and frees their slots when they end. Every
change is written to the store and to the task's event log before anyone can see it.
All methods run on the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from engines.executor import Executor, JobOutcome, Outcome
from engines.jobs import InferenceJob, JobEvent, TrainingJob
from engines.protocol import PredictReply
from engines.training import latest_checkpoint
from scheduler import Admission, Arbiter, Kind, Limits, QueueFull, Request, WaitingInfo
from scheduler.devices import DeviceError, device_group, is_gpu, resolve_among, split_node
from scheduler.memory import Shape
from server.config import ServerConfig
from server.errors import ServiceError, failed_precondition, not_found, resource_exhausted
from server.event_log import EventLogs, StoredEvent, read_events
from server.memory import PEAK_METRIC, MemoryPlanner
from server.records import TaskKind, TaskRecord, TaskState
from server.store import TaskStore
from server.validation import Submission

log = logging.getLogger(__name__)

# What writing to the data dir raises when it is full or gone: a failed write fails
# the task it belongs to (see `_write_failed`), never the server.
_STORAGE_ERRORS = (OSError, sqlite3.Error)

_TERMINAL_NAMES = frozenset(
    s.value for s in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)
)

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
        logs: EventLogs,
        arbiter: Arbiter,
        executor: Executor,
        planner: MemoryPlanner,
    ) -> None:
        self._config = config
        self._planner = planner
        self._store = store
        self._logs = logs
        self._arbiter = arbiter
        self._executor = executor
        # QUEUED and RUNNING tasks; ended tasks are read from the store.
        self._active: dict[str, TaskRecord] = {}
        self._cancel_requested: set[str] = set()
        self._ticker: asyncio.Task[None] | None = None
        # Internal jobs (served models) waiting for their admission, by job id.
        self._admission_waiters: dict[str, asyncio.Future[Admission]] = {}
        # Called after each periodic pass of the arbiter and each queued submit, so
        # holders of slots that can give them back (served models) can react.
        self.after_pass: Callable[[], None] | None = None
        # Called with each task that reaches a terminal state (metrics).
        self.on_task_end: Callable[[TaskRecord], None] | None = None
        # Cores of the machine a device is on (a Ray node's, on a cluster).
        self.cores: Callable[[str], int] = _local_cores
        # Set by close(): what workers report afterwards is left for the next start.
        self._closing = False
        # Tasks whose state or events could not be written (a full data dir), with the
        # reason; such a task is failed at the next safe point.
        self._write_failures: dict[str, str] = {}
        # Ended tasks whose final record could not be saved yet; retried on every tick
        # and read from here meanwhile, so an answer never goes back in time.
        self._unsaved: dict[str, TaskRecord] = {}
        # Admissions not yet started, and whether `_dispatch` is already draining them.
        self._admissions: collections.deque[Admission] = collections.deque()
        self._dispatching = False

    @property
    def arbiter(self) -> Arbiter:
        return self._arbiter

    async def start(self) -> None:
        self._recover()
        self._ticker = asyncio.create_task(self._tick_forever())

    async def close(self) -> None:
        """Stops admitting and recording, and ends every open Logs stream (followers
        resume with `from_seq` against the next server)."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        # Running tasks stay RUNNING in the store: the next start decides their fate.
        self._logs.close_all()
        # Last tries for what a full disk held back; what still fails is repaired from
        # the task logs at the next start, if they made it (see `_ended_in_log`).
        self._save_unsaved()
        if self._unsaved or self._logs.flush_pending():
            log.error(
                "could not save the end of tasks %s: the data dir is still full",
                ", ".join(sorted(self._unsaved)) or "(log lines only)",
            )

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
        memory_bytes, candidates = self._planner.plan(_shape(task), submission.candidates)
        request = Request(
            job_id=task.task_id,
            kind=Kind(kind.value),
            priority=task.priority,
            devices=candidates,
            memory_bytes=memory_bytes,
        )
        # Check room first so a refused task leaves no trace.
        if self._arbiter.statistics().total_waiting >= self._config.max_waiting:
            raise resource_exhausted(
                f"the queue is full ({self._config.max_waiting} waiting tasks); retry later"
            )
        # The log line, then the row: a task the disk refuses leaves neither behind, so a
        # retry with the same request_id is a new submit, and no restart runs it.
        self._event(
            task,
            "state",
            f"queued: {kind.value} at priority {task.priority} on {task.device}",
            state=TaskState.QUEUED,
        )
        failure = self._write_failures.pop(task.task_id, None)
        if failure is None:
            try:
                self._store.insert(task)
            except _STORAGE_ERRORS as exc:
                failure = _storage_reason(exc)
        if failure is not None:
            self._logs.discard(task.task_id)
            raise resource_exhausted(f"cannot accept tasks: {failure}")
        self._active[task.task_id] = task
        accepted = self._snapshot(task)
        try:
            admissions = self._arbiter.submit(request)
        except QueueFull as exc:
            self._end(task, TaskState.FAILED, f"refused: {exc}")
            raise resource_exhausted(str(exc)) from None
        self._dispatch(admissions)
        if self.after_pass is not None and task.state is TaskState.QUEUED:
            self.after_pass()  # a served model may give its slot to this task now
        return accepted

    def get(self, task_id: str) -> TaskRecord:
        task = self._active.get(task_id) or self._unsaved.get(task_id)
        if task is not None:
            return self._snapshot(task)
        stored = self._store.get(task_id)
        if stored is None:
            raise not_found(f"task {task_id!r} does not exist")
        return stored

    def list(
        self,
        *,
        states: Sequence[TaskState],
        kind: TaskKind | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[TaskRecord], str, int]:
        tasks, token, total = self._store.list(
            states=states, kind=kind, page_size=page_size, page_token=page_token
        )
        live = [self._active.get(t.task_id) or self._unsaved.get(t.task_id) or t for t in tasks]
        if states:
            # The store filtered by what it holds; a task whose latest change it has not
            # seen yet (a full disk) is filtered by what is true now. `total` may lag.
            live = [t for t in live if t.state in states]
        return [self._snapshot(t) for t in live], token, total

    def cancel(self, task_id: str) -> TaskRecord:
        task = self._active.get(task_id)
        if task is None:
            ended = self.get(task_id)  # NOT_FOUND if there is no such task
            raise failed_precondition(
                f"task {task_id} has already ended ({ended.state.value}); nothing to cancel"
            )
        if task.state is TaskState.QUEUED:
            self._arbiter.cancel(task_id)
            self._end(task, TaskState.CANCELLED, "cancelled while queued")
            return self._snapshot(task)
        if task_id not in self._cancel_requested:
            self._cancel_requested.add(task_id)
            self._event(
                task, "log", "cancel requested; stopping at the next batch", level="warning"
            )
            self._executor.cancel(task_id)
        return self._snapshot(task)

    def follow(self, task_id: str, from_seq: int, follow: bool) -> AsyncIterator[StoredEvent]:
        self.get(task_id)  # NOT_FOUND before the stream starts
        return self._logs.follow(task_id, from_seq, follow)

    def set_limits(
        self,
        changes: Mapping[str, tuple[int | None, int | None]],
        groups: Mapping[str, tuple[int | None, int | None]] | None = None,
    ) -> None:
        """Applies and persists limit changes {device: (training, inference)}; None keeps
        a limit. Growing admits waiting tasks at once; shrinking stops no running task.
        `groups` ({"cpu": ...} or {"cuda": ...}) are kept too, for devices that join later."""
        for device, (training, inference) in changes.items():
            self._dispatch(self._arbiter.set_limits(device, training=training, inference=inference))
        for key, (training, inference) in {**(groups or {}), **changes}.items():
            for kind, value in (("training", training), ("inference", inference)):
                if value is not None:
                    self._store.save_limit(key, kind, value)

    # -- internal jobs: served models hold inference slots too --------------------

    async def admit(self, request: Request) -> Admission:
        """Waits, by the request's priority, for a slot for an internal job (a served
        model), which must `release` it. Cancelling the wait leaves no trace."""
        future: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self._admission_waiters[request.job_id] = future
        try:
            try:
                admissions = self._arbiter.submit(request)
            except QueueFull as exc:
                raise resource_exhausted(str(exc)) from None
            self._dispatch(admissions)
            return await future
        except BaseException:
            # A cancelled wait cancels `future` too: it is done, but was never admitted.
            if not future.done() or future.cancelled():
                self._arbiter.cancel(request.job_id)
            else:
                self.release(request.job_id)  # admitted, but nobody is left to use it
            raise
        finally:
            self._admission_waiters.pop(request.job_id, None)

    def plan_memory(self, shape: Shape, candidates: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        """Estimated GPU memory of an internal job, and the candidates it fits on."""
        return self._planner.plan(shape, candidates)

    def release(self, job_id: str) -> None:
        """Gives back the slot of an internal job admitted through `admit`."""
        if job_id in self._arbiter.running():
            self._dispatch(self._arbiter.release(job_id))

    def job_reply(self, task_id: str, reply: PredictReply) -> None:
        """Tasks send no replies; served models have their own sink."""

    # -- what the executor reports (JobSink) -----------------------------------------

    def job_event(self, task_id: str, event: JobEvent) -> None:
        task = self._active.get(task_id)
        if task is None or self._closing:
            return
        if event.metrics:
            task.metrics.update(event.metrics)
            self._save(task)
        self._event(
            task,
            "metrics" if event.metrics else "log",
            event.message,
            level=event.level.value,
            metrics=event.metrics,
        )
        if task_id in self._write_failures and task_id not in self._cancel_requested:
            # Running on would produce work nobody can see or resume: stop it.
            self._cancel_requested.add(task_id)
            self._executor.cancel(task_id)

    def job_finished(self, task_id: str, outcome: JobOutcome) -> None:
        task = self._active.get(task_id)
        if task is None or self._closing:
            return
        queued_again = False
        try:
            if (outcome.interrupted or outcome.not_started) and self._queue_again(task, outcome):
                queued_again = True
                return
            self._cancel_requested.discard(task_id)
            if outcome.result is not None:
                task.metrics.update(outcome.result.metrics)
                peak = outcome.result.metrics.get(PEAK_METRIC, 0)
                with contextlib.suppress(*_STORAGE_ERRORS):  # a lost sample, not a lost task
                    self._planner.learn(_shape(task), int(peak))
                task.model_path = outcome.result.model_path or task.model_path
                task.output_path = outcome.result.output_path or task.output_path
            failure = self._write_failures.get(task_id)
            if outcome.outcome is Outcome.SUCCEEDED:
                self._end(task, TaskState.SUCCEEDED, _success_message(task.metrics))
            elif failure is not None:
                self._end(task, TaskState.FAILED, failure)
            elif outcome.outcome is Outcome.CANCELLED:
                self._end(task, TaskState.CANCELLED, outcome.error or "cancelled")
            else:
                if "out of memory" in outcome.error and is_gpu(task.assigned_device):
                    with contextlib.suppress(*_STORAGE_ERRORS):
                        self._planner.out_of_memory(_shape(task))
                self._end(task, TaskState.FAILED, outcome.error or "failed for an unknown reason")
        finally:
            # Whatever went wrong recording the end, the slot must not leak.
            if not queued_again:
                self._active.pop(task_id, None)
                self._logs.close(task_id)
                if task_id in self._arbiter.running():  # _queue_again may have released it
                    self._dispatch(self._arbiter.release(task_id))

    # -- devices that come and go (a Ray cluster's nodes) ------------------------------

    def add_devices(self, defaults: Mapping[str, Limits]) -> None:
        """New devices (a node joined) with their default limits, or the limits saved for
        them by `UpdateLimits`; waiting tasks that may use them start at once."""
        for device, limits in with_saved_limits(defaults, self._store.load_limits()).items():
            if device not in self._arbiter.devices:
                self._arbiter.add_device(device, limits)
        self._dispatch(self._arbiter.tick())

    def hold_devices(self, devices: Sequence[str]) -> None:
        """Nothing new starts on `devices` (their node is leaving); not saved."""
        for device in devices:
            if device in self._arbiter.devices:
                self._dispatch(self._arbiter.set_limits(device, training=0, inference=0))

    def remove_devices(self, devices: Sequence[str], why: str) -> None:
        """Forgets `devices` (their node left; the jobs that ran there have ended). A
        waiting task that could run only there fails with `why`; others keep their place."""
        for device in devices:
            try:
                dropped = self._arbiter.remove_device(device)
            except (KeyError, ValueError) as exc:
                log.error("cannot remove device %s: %s", device, exc)
                continue
            for job_id in dropped:
                waiter = self._admission_waiters.get(job_id)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(failed_precondition(f"{why}; no device left to run on"))
                task = self._active.get(job_id)
                if task is not None:
                    self._end(task, TaskState.FAILED, f"{why}; the task could run only there")

    def _queue_again(self, task: TaskRecord, outcome: JobOutcome) -> bool:
        """Queues again a task whose job ended through no fault of its own; False if it
        cannot be. A job that never began (`not_started`: its device could not take it)
        waits again for the devices it may use, less its device if that is held now; a
        training task whose machine went away (`interrupted`) resumes from its last
        checkpoint on the other nodes' devices."""
        if task.task_id in self._cancel_requested:
            return False
        why = outcome.error
        lost = split_node(task.assigned_device)[0]
        candidates = self._candidates(task.device)
        if outcome.not_started:
            kind = Kind(task.kind.value)
            candidates = tuple(
                d
                for d in candidates
                if d != task.assigned_device or getattr(self._arbiter.limits(d), kind.value)
            )
            note = f"{why}; queued again"
        else:
            checkpoint = latest_checkpoint(str(self._config.task_dir(task.task_id)))
            if task.kind is not TaskKind.TRAINING or checkpoint is None or not lost:
                return False
            kind = Kind.TRAINING
            candidates = tuple(d for d in candidates if split_node(d)[0] != lost)
            note = f"{why}; will resume from epoch {checkpoint[0]} elsewhere"
        if not candidates:
            return False
        try:
            memory_bytes, candidates = self._planner.plan(_shape(task), candidates)
        except ServiceError:
            return False
        admissions = self._arbiter.release(task.task_id)
        task.state = TaskState.QUEUED
        task.assigned_device = ""
        task.start_time = None
        self._save(task)
        self._event(task, "state", note, state=TaskState.QUEUED, level="warning")
        request = Request(
            job_id=task.task_id,
            kind=kind,
            priority=task.priority,
            devices=candidates,
            memory_bytes=memory_bytes,
        )
        try:
            admissions = [*admissions, *self._arbiter.submit(request)]
        except (QueueFull, ValueError) as exc:
            self._end(task, TaskState.FAILED, f"{why}; could not be queued again: {exc}")
        self._dispatch(admissions)
        return True

    # -- internals -------------------------------------------------------------------

    def _dispatch(self, admissions: Sequence[Admission]) -> None:
        """Starts what the arbiter admitted. A start that fails at once releases its slot,
        which admits the next task, and so on: that chain is a loop over one queue, not
        a recursion, so a thousand failing starts cannot overflow the stack."""
        self._admissions.extend(admissions)
        if self._dispatching:
            return  # the loop further up the stack takes them
        self._dispatching = True
        try:
            while self._admissions:
                if self._closing:
                    self._admissions.clear()
                    return
                self._start(self._admissions.popleft())
        finally:
            self._dispatching = False

    def _start(self, admission: Admission) -> None:
        waiter = self._admission_waiters.get(admission.job_id)
        if waiter is not None:
            if waiter.done():  # its caller gave up in the meantime
                self._dispatch(self._arbiter.release(admission.job_id))
            else:
                waiter.set_result(admission)
            return
        task = self._active.get(admission.job_id)
        if task is None or task.state is not TaskState.QUEUED:
            # Cannot happen while the arbiter and the manager agree; never run twice.
            log.error("admission for unknown or non-queued task %s", admission.job_id)
            self._dispatch(self._arbiter.release(admission.job_id))
            return
        task.state = TaskState.RUNNING
        task.assigned_device = admission.device
        task.start_time = time.time()
        self._save(task)
        self._event(task, "state", f"running on {admission.device}", state=TaskState.RUNNING)
        failure = self._write_failures.get(task.task_id)
        if failure is not None:
            self.job_finished(task.task_id, JobOutcome(Outcome.FAILED, error=failure))
            return
        try:
            self._executor.submit(self._job(task), self)
        except Exception as exc:
            log.exception("could not start task %s", task.task_id)
            self.job_finished(
                task.task_id, JobOutcome(Outcome.FAILED, error=f"could not start: {exc}")
            )

    def _job(self, task: TaskRecord) -> TrainingJob | InferenceJob:
        p = task.params
        threads = self.threads_for(task.assigned_device, Kind(task.kind.value))
        if task.kind is TaskKind.INFERENCE:
            return InferenceJob(
                task_id=task.task_id,
                model_path=p["model_path"],
                dataset=p["dataset"],
                batch_size=p["batch_size"],
                top_k=p["top_k"],
                device=task.assigned_device,
                output_dir=str(self._config.task_dir(task.task_id)),
                num_threads=threads,
            )
        checkpoint = latest_checkpoint(str(self._config.task_dir(task.task_id)))
        return TrainingJob(
            task_id=task.task_id,
            model=p["model"],
            dataset=p["dataset"],
            epochs=p["epochs"],
            batch_size=p["batch_size"],
            learning_rate=p["learning_rate"],
            optimizer=p["optimizer"],
            image_size=p["image_size"],
            seed=p["seed"],
            val_split=p["val_split"],
            device=task.assigned_device,
            output_dir=str(self._config.task_dir(task.task_id)),
            num_threads=threads,
            # A task interrupted by a restart left checkpoints: carry on from the last.
            resume_from=checkpoint[1] if checkpoint else "",
        )

    def threads_for(self, device: str, kind: Kind) -> int:
        """Intra-op threads per job: the cores shared by the slots that may run at once,
        so a full device does not oversubscribe the CPU. `device` is concrete, or a
        request (`cpu` on a cluster) that stands for its first candidate."""
        if device not in self._arbiter.devices:
            device = resolve_among(device, self._arbiter.devices)[0]
        cores = self.cores(device)
        if is_gpu(device):
            return min(4, cores)  # a GPU job needs threads only to feed the GPU
        limit = self._arbiter.limits(device).of(kind)
        return max(1, cores // max(1, limit))

    def _end(self, task: TaskRecord, state: TaskState, message: str) -> None:
        task.state = state
        task.end_time = time.time()
        if state is not TaskState.SUCCEEDED:
            task.error = message
        self._event(task, "state", message, state=state, level=_STATE_LEVEL[state])
        if not self._save(task):
            self._unsaved[task.task_id] = task
        self._write_failures.pop(task.task_id, None)
        self._logs.close(task.task_id)
        self._active.pop(task.task_id, None)
        if self.on_task_end is not None:
            self.on_task_end(task)

    def _save(self, task: TaskRecord) -> bool:
        """Saves the task's record; on a storage error remembers it and returns False."""
        try:
            self._store.save(task)
        except _STORAGE_ERRORS as exc:
            self._write_failed(task, exc)
            return False
        return True

    def _write_failed(self, task: TaskRecord, exc: BaseException) -> None:
        reason = f"the data dir cannot be written: {_storage_reason(exc)}"
        if task.task_id not in self._write_failures:
            log.error("task %s: %s", task.task_id, reason)
            self._write_failures[task.task_id] = reason

    def _save_unsaved(self) -> None:
        for task_id, task in list(self._unsaved.items()):
            try:
                self._store.save(task)
            except _STORAGE_ERRORS:
                return  # still full; the next tick tries again
            del self._unsaved[task_id]

    def _event(
        self,
        task: TaskRecord,
        type_: str,
        message: str,
        *,
        level: str = "info",
        metrics: dict[str, float] | None = None,
        state: TaskState | None = None,
    ) -> None:
        try:
            task_log = self._logs.open(task.task_id)
        except _STORAGE_ERRORS as exc:
            self._write_failed(task, exc)
            return
        try:
            event = task_log.append(
                type_, message, level=level, metrics=metrics, state=state.value if state else ""
            )
        except _STORAGE_ERRORS as exc:  # the event is in memory and was sent to followers
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

    def _snapshot(self, task: TaskRecord) -> TaskRecord:
        """A copy for callers: later changes to the live record do not leak into replies."""
        return TaskRecord(**{**task.__dict__, "metrics": dict(task.metrics)})

    def waiting_info(self, task_id: str) -> WaitingInfo | None:
        """Where a queued task stands (position, reason, effective priority), else None."""
        return self._arbiter.waiting_info(task_id)

    def waiting_infos(self) -> Mapping[str, WaitingInfo]:
        """The same for every queued task, in one pass (for pages of tasks)."""
        return self._arbiter.waiting_infos()

    def _recover(self) -> None:
        """Brings back the tasks of an earlier run of the server on this data dir: queued
        ones queue again in their order; interrupted training resumes from its last
        checkpoint (or fails if it has none); interrupted inference starts over."""
        interrupted = set()
        for task in self._store.in_states([TaskState.RUNNING]):
            if self._ended_in_log(task):
                continue
            self._active[task.task_id] = task
            if task.kind is TaskKind.TRAINING:
                checkpoint = latest_checkpoint(str(self._config.task_dir(task.task_id)))
                if checkpoint is None:
                    self._end(task, TaskState.FAILED, "interrupted by restart")
                    continue
                note = f"interrupted by restart; will resume from epoch {checkpoint[0]}"
            else:
                note = "interrupted by restart; queued to run again"
            task.state = TaskState.QUEUED
            task.assigned_device = ""
            task.start_time = None
            self._save(task)
            self._event(task, "state", note, state=TaskState.QUEUED, level="warning")
            interrupted.add(task.task_id)
        for task in self._store.in_states([TaskState.QUEUED]):
            if self._ended_in_log(task):
                continue
            self._active[task.task_id] = task
            candidates = self._candidates(task.device)
            if not candidates:
                self._end(task, TaskState.FAILED, f"device {task.device} is no longer available")
                continue
            try:
                memory_bytes, candidates = self._planner.plan(_shape(task), candidates)
                request = Request(
                    job_id=task.task_id,
                    kind=Kind(task.kind.value),
                    priority=task.priority,
                    devices=candidates,
                    memory_bytes=memory_bytes,
                )
                if task.task_id not in interrupted:
                    self._event(task, "log", "requeued after a server restart")
                self._dispatch(self._arbiter.submit(request))
            except (ServiceError, QueueFull, ValueError) as exc:
                self._end(task, TaskState.FAILED, f"could not be requeued after a restart: {exc}")

    def _ended_in_log(self, task: TaskRecord) -> bool:
        """Whether the task's log ends in a terminal state that its stored record missed
        (the data dir was full when it ended); if so the record is repaired from it."""
        path = self._logs.path(task.task_id)
        events = read_events(path) if path.exists() else []
        if not events or events[-1].state not in _TERMINAL_NAMES:
            return False
        last = events[-1]
        task.state = TaskState(last.state)
        task.end_time = last.time
        task.last_seq = last.seq
        if task.state is not TaskState.SUCCEEDED:
            task.error = last.message
        log.warning("task %s: its log says %s; record repaired", task.task_id, last.state)
        self._save(task)
        return True

    def _candidates(self, device: str) -> tuple[str, ...]:
        try:
            return resolve_among(device, self._arbiter.devices)
        except DeviceError:
            return ()

    async def _tick_forever(self) -> None:
        # Aging changes the order of waiting tasks over time; a cheap periodic re-check
        # lets that take effect even when no task starts or ends.
        interval = max(0.05, min(1.0, self._config.aging_interval_s / 10))
        while True:
            await asyncio.sleep(interval)
            self._dispatch(self._arbiter.tick())
            if self._unsaved:
                self._save_unsaved()
            self._logs.flush_pending()
            if self.after_pass is not None:
                self.after_pass()


def _local_cores(device: str) -> int:
    return os.cpu_count() or 1


def with_saved_limits(
    defaults: Mapping[str, Limits], saved: Mapping[tuple[str, str], int]
) -> dict[str, Limits]:
    """`defaults` (device -> limits), overridden by limits saved by `UpdateLimits`: the
    device's own, else its group's (`cuda`, or `cpu` on a cluster), so that a node that
    joins later gets the limits last set for every device like its own."""
    limits: dict[str, Limits] = {}
    for device, default in defaults.items():
        values = {"training": default.training, "inference": default.inference}
        for key in (device_group(device), device):
            for kind in values:
                values[kind] = saved.get((key, kind), values[kind]) if key else values[kind]
        limits[device] = Limits(**values)
    return limits


def _shape(task: TaskRecord) -> Shape:
    """What the task's GPU memory use depends on."""
    p = task.params
    return Shape(p["model"], p["batch_size"], p["image_size"], Kind(task.kind.value))


def _storage_reason(exc: BaseException) -> str:
    """ "No space left on device", "database or disk is full": the words, no errno."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _success_message(metrics: Mapping[str, float]) -> str:
    shown = [f"{k} {metrics[k]:.4g}" for k in _SUMMARY_METRICS if k in metrics]
    return f"succeeded: {', '.join(shown)}" if shown else "succeeded"


_SUMMARY_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
