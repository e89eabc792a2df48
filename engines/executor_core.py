"""What the local and the Ray executors share, written once.

An executor moves jobs to its workers and their messages back: pipes and processes in
`LocalExecutor`, actor calls in `RayExecutor`. That transport is all they keep. The
rest is here:

- `RunTable`: the running jobs, each with its sink and its worker. A worker's messages
  become sink calls and, at the end, exactly one `JobOutcome`. A cancel asks the
  worker to stop, then stops it by force after the grace period; a job ended that way
  says it was killed.
- `WarmPool`: idle workers per device, warm for the next job, up to `max_idle` each.
- `Background`: references to background asyncio tasks until they are done.

Everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from engines.executor import JobOutcome, JobSink, Outcome, ServingSink
from engines.protocol import (
    FromWorker,
    Job,
    JobCancelledMsg,
    JobDone,
    JobEventMsg,
    JobFailed,
    JobPreemptedMsg,
    PredictReply,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
W = TypeVar("W")


@dataclass(eq=False)
class Run(Generic[W]):
    """One job on its worker, from `submit` until its outcome is reported."""

    job: Job
    sink: JobSink
    worker: W
    # The same sink, for a serving job: it takes the `PredictReply`s.
    replies: ServingSink | None = None
    cancelling: asyncio.TimerHandle | None = None
    # Asked to yield (`RunTable.preempt`): its force-stop timer.
    preempting: asyncio.TimerHandle | None = None
    # Its worker was killed because its grace period ran out.
    forced: bool = False
    done: bool = False

    @property
    def task_id(self) -> str:
        return self.job.task_id


R = TypeVar("R", bound="Run[Any]")


class RunTable(Generic[R]):
    """The running jobs by task id, and how each one's messages reach its sink.

    The executor supplies its transport as callables: `ask_cancel(run)` sends the
    worker a cancel request; `ask_yield(run)` asks its training job to yield; `kill(run)`
    stops the worker now (the transport then sees it die and ends the run);
    `release(run, reuse)` takes the worker back when its run has ended (into the warm
    pool if `reuse` and it can go on, else away).
    """

    def __init__(
        self,
        *,
        cancel_grace_s: float,
        noun: str,
        ask_cancel: Callable[[R], None],
        ask_yield: Callable[[R], None],
        kill: Callable[[R], None],
        release: Callable[[R, bool], None],
    ) -> None:
        self._cancel_grace_s = cancel_grace_s
        self._noun = noun  # what a worker is called in sentences: "worker", "actor"
        self._ask_cancel = ask_cancel
        self._ask_yield = ask_yield
        self._kill = kill
        self._release = release
        self._runs: dict[str, R] = {}

    def add(self, run: R) -> None:
        self._runs[run.task_id] = run

    def get(self, task_id: str) -> R | None:
        return self._runs.get(task_id)

    def runs(self) -> list[R]:
        return list(self._runs.values())

    def cancel(self, task_id: str) -> None:
        """Asks the job to stop and arms its grace timer; a job that is not running, or
        is being cancelled already, is ignored."""
        run = self._runs.get(task_id)
        if run is None or run.cancelling is not None:
            return
        self._ask_cancel(run)
        loop = asyncio.get_running_loop()
        run.cancelling = loop.call_later(self._cancel_grace_s, self._force_stop, run)

    def preempt(self, task_id: str, grace_s: float) -> None:
        """Asks the job to yield and arms its force-stop timer; a job that is not
        running, or is being cancelled or preempted already, is ignored."""
        run = self._runs.get(task_id)
        if run is None or run.cancelling is not None or run.preempting is not None:
            return
        self._ask_yield(run)
        loop = asyncio.get_running_loop()
        run.preempting = loop.call_later(grace_s, self._force_stop, run)

    def ended_by_force(self, run: R) -> JobOutcome | None:
        """The outcome of a job whose worker died while it was being cancelled, or was
        stopped because it did not yield in time; None otherwise (the death is a
        failure: a worker that crashes while yielding has not yielded)."""
        if run.cancelling is not None:
            return self.cancelled_by_force()
        if run.preempting is not None and run.forced:
            return JobOutcome(
                Outcome.PREEMPTED,
                error=f"preempted; the {self._noun} did not yield in time and was stopped",
            )
        return None

    def cancelled_by_force(self) -> JobOutcome:
        """The outcome of a job whose worker died while it was being cancelled."""
        return JobOutcome(
            Outcome.CANCELLED,
            error=f"cancelled; the {self._noun} did not stop within {self._cancel_grace_s:g} s "
            "and was killed",
        )

    def deliver(self, run: R, message: FromWorker, where: str) -> None:
        """Passes one of the run's messages on: events and replies to its sink, and a
        job's last message as its outcome (the worker may then run another job).
        `where` names the worker for the log ("in tandem-worker-cpu-3", "on node-2/cpu")."""
        if run.done:
            return
        task_id = run.task_id
        if isinstance(message, JobEventMsg):
            run.sink.job_event(task_id, message.event)
        elif isinstance(message, PredictReply):
            self.reply(run, message)
        elif isinstance(message, JobDone):
            self.finish(run, JobOutcome(Outcome.SUCCEEDED, message.result), reuse=True)
        elif isinstance(message, JobFailed):
            if message.traceback:
                log.error("task %s failed %s:\n%s", task_id, where, message.traceback)
            self.finish(run, JobOutcome(Outcome.FAILED, error=message.reason), reuse=True)
        elif isinstance(message, JobCancelledMsg):
            outcome = JobOutcome(Outcome.CANCELLED, error="cancelled at a batch boundary")
            self.finish(run, outcome, reuse=True)
        elif isinstance(message, JobPreemptedMsg):
            outcome = JobOutcome(
                Outcome.PREEMPTED, error="preempted", preemption=message.preemption
            )
            self.finish(run, outcome, reuse=True)
        # WorkerReady concerns the worker, not the job: the transport handles it.

    def reply(self, run: R, reply: PredictReply) -> None:
        """Hands a serving job's answer to its sink, unless the job has ended."""
        if not run.done and run.replies is not None:
            run.replies.job_reply(run.task_id, reply)

    def finish(self, run: R, outcome: JobOutcome, *, reuse: bool) -> None:
        """Ends the run once: its worker is released first (so a job the sink starts
        in turn may have it), then the sink hears the outcome. Later calls do nothing."""
        if run.done:
            return
        run.done = True
        self._runs.pop(run.task_id, None)
        for timer in (run.cancelling, run.preempting):
            if timer is not None:
                timer.cancel()
        self._release(run, reuse)
        run.sink.job_finished(run.task_id, outcome)

    def close(self) -> list[R]:
        """Forgets every run without telling its sink (the executor is closing); returns
        them, so that the caller can stop their workers."""
        runs = list(self._runs.values())
        for run in runs:
            for timer in (run.cancelling, run.preempting):
                if timer is not None:
                    timer.cancel()
        self._runs.clear()
        return runs

    def _force_stop(self, run: R) -> None:
        if not run.done:
            log.warning(
                "task %s did not stop within its grace period; killing its %s on %s",
                run.task_id,
                self._noun,
                run.job.device,
            )
            run.forced = True
            self._kill(run)


class Warm(Protocol):
    """A worker as a warm pool sees it."""

    @property
    def device(self) -> str:
        """The device it runs jobs on."""

    @property
    def ready(self) -> bool:
        """Whether it is up (torch imported): it would start a job at once."""


P = TypeVar("P", bound=Warm)


class WarmPool(Generic[P]):
    """Idle workers per device, up to `max_idle` each; `retire` takes away a worker
    that finds no room."""

    def __init__(self, *, max_idle: int, retire: Callable[[P], None]) -> None:
        self._max_idle = max_idle
        self._retire = retire
        self._idle: dict[str, list[P]] = {}

    def take(self, device: str, usable: Callable[[P], bool] | None = None) -> P | None:
        """An idle worker for `device`, one that is up if there is one; None if none
        is idle. Workers that are not `usable` (dead, say) are dropped, never taken."""
        idle = self._idle.get(device, [])
        if usable is not None:
            idle[:] = [worker for worker in idle if usable(worker)]
        # Prefer a worker that is already up: it starts the job at once.
        idle.sort(key=lambda worker: worker.ready)
        return idle.pop() if idle else None

    def park(self, worker: P) -> None:
        """Keeps `worker` warm if its device has room, else retires it."""
        idle = self._idle.setdefault(worker.device, [])
        if len(idle) < self._max_idle:
            idle.append(worker)
        else:
            self._retire(worker)

    def fill(
        self, device: str, count: int, spawn: Callable[[str], P], *, at_most: int | None = None
    ) -> None:
        """Spawns workers for `device` until `count` are idle, or `at_most` were spawned."""
        idle = self._idle.setdefault(device, [])
        spawned = 0
        while len(idle) < count and (at_most is None or spawned < at_most):
            idle.append(spawn(device))
            spawned += 1

    def discard(self, worker: P) -> None:
        """Forgets `worker` if it is idle (it died)."""
        idle = self._idle.get(worker.device, [])
        if worker in idle:
            idle.remove(worker)

    def drop(self, where: Callable[[str], bool]) -> list[P]:
        """Forgets the idle workers of every device `where` holds for; returns them."""
        dropped: list[P] = []
        for device in [device for device in self._idle if where(device)]:
            dropped += self._idle.pop(device)
        return dropped

    def clear(self) -> list[P]:
        """Forgets every idle worker; returns them."""
        workers = [worker for idle in self._idle.values() for worker in idle]
        self._idle.clear()
        return workers


class Background:
    """Background tasks of an executor, kept until they are done: the loop holds tasks
    only weakly, so a task nobody references may vanish mid-way."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self) -> None:
        """Returns when every task now running has finished."""
        await asyncio.gather(*self._tasks)

    async def cancel(self) -> None:
        """Cancels every task and waits until they have stopped."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
