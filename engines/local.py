"""The local executor: a pool of warm worker processes per device on this machine.

Workers are spawned (never forked: CUDA and forked torch do not mix), import torch
once, and are reused across jobs. The pool does not decide how many jobs run: the
arbiter does, and only hands over admitted jobs. The pool only keeps spare workers
warm (up to `max_idle` per device) and replaces a worker that dies.

Everything here runs on the event loop thread: the pipes and the process sentinels
are watched with `loop.add_reader`, so no thread is needed per worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from engines.executor import JobOutcome, JobSink, Outcome
from engines.process import WorkerProcess
from engines.protocol import (
    CancelJob,
    FromWorker,
    Job,
    JobCancelledMsg,
    JobDone,
    JobEventMsg,
    JobFailed,
    PredictBatch,
    PredictReply,
    RunJob,
    WorkerReady,
)

log = logging.getLogger(__name__)


class LocalExecutor:
    """Runs jobs in worker processes on this machine."""

    def __init__(
        self,
        *,
        prewarm: Mapping[str, int] | None = None,
        max_idle: int = 4,
        cancel_grace_s: float = 10.0,
    ) -> None:
        self._prewarm = dict(prewarm or {})
        self._max_idle = max_idle
        self._cancel_grace_s = cancel_grace_s
        self._idle: dict[str, list[WorkerProcess]] = {}
        self._busy: dict[str, WorkerProcess] = {}  # task_id -> worker
        self._sinks: dict[str, JobSink] = {}
        self._cancelling: dict[str, asyncio.TimerHandle] = {}
        self._workers: set[WorkerProcess] = set()
        self._closing: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for device, count in self._prewarm.items():
            for _ in range(count):
                self._idle.setdefault(device, []).append(self._spawn(device))

    def submit(self, job: Job, sink: JobSink) -> None:
        if self._closed:
            raise RuntimeError("executor is closed")
        idle = self._idle.get(job.device, [])
        # A worker may have died without its exit being handled yet: never pick it.
        idle[:] = [w for w in idle if w.alive()]
        # Prefer a worker that is already up: it starts the job at once.
        idle.sort(key=lambda w: w.ready)
        worker = idle.pop() if idle else self._spawn(job.device)
        worker.task_id = job.task_id
        self._busy[job.task_id] = worker
        self._sinks[job.task_id] = sink
        # The pipe buffers the job until a worker still importing torch reads it.
        if not worker.send(RunJob(job)):
            worker.kill()  # its exit is reported through the sentinel

    def cancel(self, task_id: str) -> None:
        worker = self._busy.get(task_id)
        if worker is None or task_id in self._cancelling:
            return
        worker.send(CancelJob(task_id))
        assert self._loop is not None
        self._cancelling[task_id] = self._loop.call_later(
            self._cancel_grace_s, self._force_stop, task_id
        )

    def send(self, task_id: str, message: PredictBatch) -> bool:
        worker = self._busy.get(task_id)
        return worker is not None and worker.send(message)

    def running(self) -> dict[str, int | None]:
        """task_id -> pid of the worker running it (for operators and tests)."""
        return {task_id: w.pid for task_id, w in self._busy.items()}

    def idle_workers(self, device: str) -> int:
        return len(self._idle.get(device, []))

    async def close(self) -> None:
        self._closed = True
        for handle in self._cancelling.values():
            handle.cancel()
        workers = list(self._workers)
        for worker in workers:
            self._unwatch(worker)
        await asyncio.gather(*(w.close(grace_s=2.0) for w in workers), *self._closing)
        self._workers.clear()
        self._idle.clear()
        self._busy.clear()
        self._sinks.clear()

    # -- worker life cycle ---------------------------------------------------------

    def _spawn(self, device: str) -> WorkerProcess:
        assert self._loop is not None, "start() the executor first"
        worker = WorkerProcess(device)
        worker.start()
        self._workers.add(worker)
        assert worker.conn is not None
        self._loop.add_reader(worker.conn.fileno(), self._on_readable, worker)
        self._loop.add_reader(worker.sentinel, self._on_exit, worker)
        log.debug("spawned %s (pid %s)", worker.name, worker.pid)
        return worker

    def _unwatch(self, worker: WorkerProcess) -> None:
        if self._loop is None:
            return
        if worker.conn is not None and not worker.conn.closed:
            self._loop.remove_reader(worker.conn.fileno())
        if worker.process is not None:
            self._loop.remove_reader(worker.sentinel)

    def _on_readable(self, worker: WorkerProcess) -> None:
        assert worker.conn is not None
        try:
            # Bounded, so one chatty worker cannot starve the loop.
            for _ in range(64):
                if not worker.conn.poll():
                    break
                self._handle(worker, worker.conn.recv())
        except (EOFError, OSError):
            # The child is gone; its sentinel reports how.
            if self._loop is not None and not worker.conn.closed:
                self._loop.remove_reader(worker.conn.fileno())
        except Exception:
            # A message that does not decode: the pipe is out of step, so the worker
            # cannot be trusted; its exit is reported through the sentinel.
            log.exception("bad message from %s; killing it", worker.name)
            if self._loop is not None and not worker.conn.closed:
                self._loop.remove_reader(worker.conn.fileno())
            worker.kill()

    def _handle(self, worker: WorkerProcess, message: FromWorker) -> None:
        if isinstance(message, WorkerReady):
            worker.ready = True
        elif isinstance(message, JobEventMsg):
            sink = self._sinks.get(message.task_id)
            if sink is not None:
                sink.job_event(message.task_id, message.event)
        elif isinstance(message, PredictReply):
            sink = self._sinks.get(message.task_id)
            if sink is not None:
                sink.job_reply(message.task_id, message)
        elif isinstance(message, JobDone):
            self._finish(worker, message.task_id, JobOutcome(Outcome.SUCCEEDED, message.result))
        elif isinstance(message, JobFailed):
            if message.traceback:
                log.error(
                    "task %s failed in %s:\n%s", message.task_id, worker.name, message.traceback
                )
            self._finish(worker, message.task_id, JobOutcome(Outcome.FAILED, error=message.reason))
        elif isinstance(message, JobCancelledMsg):
            self._finish(
                worker,
                message.task_id,
                JobOutcome(Outcome.CANCELLED, error="cancelled at a batch boundary"),
            )

    def _finish(self, worker: WorkerProcess | None, task_id: str, outcome: JobOutcome) -> None:
        handle = self._cancelling.pop(task_id, None)
        if handle is not None:
            handle.cancel()
        self._busy.pop(task_id, None)
        sink = self._sinks.pop(task_id, None)
        if worker is not None and worker.alive():
            worker.task_id = None
            self._park(worker)
        if sink is not None:
            sink.job_finished(task_id, outcome)

    def _park(self, worker: WorkerProcess) -> None:
        idle = self._idle.setdefault(worker.device, [])
        if len(idle) < self._max_idle:
            idle.append(worker)
        else:
            self._retire(worker)

    def _retire(self, worker: WorkerProcess) -> None:
        self._unwatch(worker)
        self._workers.discard(worker)
        # Keep a reference until it is done: the loop holds tasks only weakly.
        closing = asyncio.ensure_future(worker.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def _on_exit(self, worker: WorkerProcess) -> None:
        # Read what the worker said before it died (its last events, maybe its outcome).
        if worker.conn is not None and not worker.conn.closed:
            self._on_readable(worker)
        self._unwatch(worker)
        self._workers.discard(worker)
        how = worker.exit_description()
        if worker.conn is not None:
            worker.conn.close()
        idle = self._idle.get(worker.device, [])
        if worker in idle:
            idle.remove(worker)
        task_id = worker.task_id
        if task_id is not None and task_id in self._busy:
            if task_id in self._cancelling:
                outcome = JobOutcome(
                    Outcome.CANCELLED,
                    error=f"cancelled; the worker did not stop within {self._cancel_grace_s:g} s "
                    "and was killed",
                )
            else:
                outcome = JobOutcome(
                    Outcome.FAILED,
                    error=f"the worker process running the task {how} (pid {worker.pid})",
                )
            log.warning(
                "%s (pid %s) %s while running task %s", worker.name, worker.pid, how, task_id
            )
            self._finish(None, task_id, outcome)
        if self._closed:
            return
        # Keep the device warm: replace a worker that had come up properly.
        if worker.ready and len(self._idle.get(worker.device, [])) < self._prewarm.get(
            worker.device, 0
        ):
            self._idle.setdefault(worker.device, []).append(self._spawn(worker.device))

    def _force_stop(self, task_id: str) -> None:
        worker = self._busy.get(task_id)
        if worker is not None:
            log.warning(
                "task %s did not stop within the grace period; killing %s", task_id, worker.name
            )
            worker.kill()
