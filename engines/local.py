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

from engines.executor import JobOutcome, JobSink, Outcome, ServingSink
from engines.executor_core import Background, Run, RunTable, WarmPool
from engines.jobs import InferenceJob, ServeJob, TrainingJob
from engines.process import WorkerProcess
from engines.protocol import (
    CancelJob,
    FromWorker,
    Job,
    PredictBatch,
    RunJob,
    SetThreads,
    WorkerReady,
    YieldJob,
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
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self._prewarm = dict(prewarm or {})
        # Set in each worker before it imports torch (OMP_WAIT_POLICY, say).
        self._environment = dict(environment or {})
        self._runs: RunTable[Run[WorkerProcess]] = RunTable(
            cancel_grace_s=cancel_grace_s,
            noun="worker",
            ask_cancel=self._ask_cancel,
            ask_yield=self._ask_yield,
            kill=self._kill,
            release=self._release,
        )
        self._pool: WarmPool[WorkerProcess] = WarmPool(max_idle=max_idle, retire=self._retire)
        self._workers: set[WorkerProcess] = set()
        self._closing = Background()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for device, count in self._prewarm.items():
            self._pool.fill(device, count, self._spawn)

    def submit(self, job: TrainingJob | InferenceJob, sink: JobSink) -> None:
        self._start(Run(job, sink, self._worker_for(job)))

    def serve(self, job: ServeJob, sink: ServingSink) -> None:
        self._start(Run(job, sink, self._worker_for(job), replies=sink))

    def cancel(self, task_id: str) -> None:
        self._runs.cancel(task_id)

    def preempt(self, task_id: str, grace_s: float) -> None:
        self._runs.preempt(task_id, grace_s)

    def set_threads(self, task_id: str, threads: int) -> None:
        run = self._runs.get(task_id)
        if run is not None:
            run.worker.send(SetThreads(task_id, threads))

    def send(self, task_id: str, message: PredictBatch) -> bool:
        run = self._runs.get(task_id)
        return run is not None and run.worker.send(message)

    def running(self) -> dict[str, int | None]:
        """task_id -> pid of the worker running it (for operators and tests)."""
        return {run.task_id: run.worker.pid for run in self._runs.runs()}

    async def close(self) -> None:
        self._closed = True
        self._runs.close()
        workers = list(self._workers)
        for worker in workers:
            self._unwatch(worker)
        await asyncio.gather(*(w.close(grace_s=2.0) for w in workers), self._closing.wait())
        self._workers.clear()
        self._pool.clear()

    # -- the transport: jobs to workers, messages back ---------------------------------

    def _worker_for(self, job: Job) -> WorkerProcess:
        if self._closed:
            raise RuntimeError("executor is closed")
        # A worker may have died without its exit being handled yet: never pick it.
        return self._pool.take(job.device, WorkerProcess.alive) or self._spawn(job.device)

    def _start(self, run: Run[WorkerProcess]) -> None:
        run.worker.task_id = run.task_id
        self._runs.add(run)
        # The pipe buffers the job until a worker still importing torch reads it.
        if not run.worker.send(RunJob(run.job)):
            run.worker.kill()  # its exit is reported through the sentinel

    def _ask_cancel(self, run: Run[WorkerProcess]) -> None:
        run.worker.send(CancelJob(run.task_id))

    def _ask_yield(self, run: Run[WorkerProcess]) -> None:
        run.worker.send(YieldJob(run.task_id))

    def _kill(self, run: Run[WorkerProcess]) -> None:
        run.worker.kill()  # its exit is reported through the sentinel

    def _release(self, run: Run[WorkerProcess], reuse: bool) -> None:
        worker = run.worker
        if reuse and worker.alive():
            worker.task_id = None
            self._pool.park(worker)

    # -- worker life cycle ---------------------------------------------------------

    def _spawn(self, device: str) -> WorkerProcess:
        assert self._loop is not None, "start() the executor first"
        worker = WorkerProcess(device, environment=self._environment)
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
            return
        run = self._runs.get(message.task_id)
        if run is not None:
            self._runs.deliver(run, message, f"in {worker.name}")

    def _retire(self, worker: WorkerProcess) -> None:
        self._unwatch(worker)
        self._workers.discard(worker)
        self._closing.start(worker.close())

    def _on_exit(self, worker: WorkerProcess) -> None:
        # Read what the worker said before it died (its last events, maybe its outcome).
        if worker.conn is not None and not worker.conn.closed:
            self._on_readable(worker)
        self._unwatch(worker)
        self._workers.discard(worker)
        how = worker.exit_description()
        if worker.conn is not None:
            worker.conn.close()
        self._pool.discard(worker)
        run = self._runs.get(worker.task_id) if worker.task_id is not None else None
        if run is not None:
            outcome = self._runs.ended_by_force(run)
            if outcome is None:
                outcome = JobOutcome(
                    Outcome.FAILED,
                    error=f"the worker process running the task {how} (pid {worker.pid})",
                )
            log.warning(
                "%s (pid %s) %s while running task %s", worker.name, worker.pid, how, run.task_id
            )
            self._runs.finish(run, outcome, reuse=False)
        if self._closed:
            return
        # Keep the device warm: replace a worker that had come up properly, one for one.
        if worker.ready:
            prewarm = self._prewarm.get(worker.device, 0)
            self._pool.fill(worker.device, prewarm, self._spawn, at_most=1)
