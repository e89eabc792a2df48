"""The worker process: imports torch once, then runs jobs sent by the server, one at
a time, reporting events and the outcome over its pipe.

A training or inference job notices a cancel request, and a new thread count, at its
next batch boundary (`should_stop` polls the pipe without blocking). A serving job
answers prediction batches until it is cancelled, several at once when they come
together (`ForwardPasses`). If the server goes away the pipe breaks and the worker
exits.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from engines.forward_lanes import ForwardLanes
from engines.jobs import (
    InferenceJob,
    JobCancelled,
    JobError,
    JobEvent,
    JobPreempted,
    JobResult,
    Level,
    ServeJob,
    TrainingJob,
)
from engines.protocol import (
    CancelJob,
    Job,
    JobCancelledMsg,
    JobDone,
    JobEventMsg,
    JobFailed,
    JobPreemptedMsg,
    PredictBatch,
    PredictReply,
    RunJob,
    SetThreads,
    Shutdown,
    WorkerReady,
    YieldJob,
)
from engines.served_batches import answer_on_lanes

if TYPE_CHECKING:
    from engines.predict import Predictor


class ServerGone(Exception):
    """The pipe to the server broke: nobody is left to report to."""


class _Control:
    """What the server asked of the running job: stop it (and maybe exit afterwards),
    yield its device (a training job), or run on another number of threads."""

    def __init__(self, conn: Connection, task_id: str) -> None:
        self.conn = conn
        self.task_id = task_id
        self.cancelled = False
        self.shutdown = False
        self.yielding = False
        # A thread count the job has not taken up yet.
        self.threads: int | None = None
        # Serving jobs answer from several threads: one message on the pipe at a time.
        self.sending = threading.Lock()

    def note(self, message: object) -> None:
        if isinstance(message, CancelJob) and message.task_id == self.task_id:
            self.cancelled = True
        elif isinstance(message, YieldJob) and message.task_id == self.task_id:
            self.yielding = True
        elif isinstance(message, SetThreads) and message.task_id == self.task_id:
            self.threads = message.threads
        elif isinstance(message, Shutdown):
            self.cancelled = self.shutdown = True

    def should_stop(self) -> bool:
        """Reads what the server sent; called by a batch job on its own thread before
        each batch, where it also takes up a new thread count."""
        try:
            while self.conn.poll():
                self.note(self.conn.recv())
        except (EOFError, OSError):
            raise ServerGone from None
        if self.threads is not None and not self.cancelled:
            threads, self.threads = self.threads, None
            self.emit(use_threads(threads))
        return self.cancelled

    def should_yield(self) -> bool:
        """Read right after `should_stop`, which has just drained the pipe."""
        return self.yielding

    def emit(self, event: JobEvent) -> None:
        self.send(JobEventMsg(self.task_id, event))

    def send(self, message: object) -> None:
        with self.sending:
            _send(self.conn, message)


def use_threads(threads: int) -> JobEvent:
    """Sets the calling thread's torch intra-op threads (OpenMP keeps the count per
    thread: the job's own thread must call this); returns the event that says so."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    return JobEvent(
        f"now on {threads} CPU thread{'s' if threads != 1 else ''} (was {before}): "
        "the device's cores are shared by the jobs running there",
        # Debug: it changes as jobs come and go (and served models idle and wake).
        level=Level.DEBUG,
        metrics={"threads": float(threads)},
    )


def worker_main(conn: Connection) -> None:
    """Entry point of a spawned worker process."""
    # Ctrl-C in a terminal reaches the whole process group; the server decides when
    # workers stop, so they ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    preload()
    conn.send(WorkerReady(pid=os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(message, Shutdown):
            return
        if isinstance(message, RunJob):
            try:
                if _run(conn, message.job):
                    return  # a Shutdown arrived during the job
            except ServerGone:
                return
        # A CancelJob or PredictBatch for a job that already ended is stale: ignore it.


def preload() -> None:
    """Imports what jobs run on (torch, torchvision, the job modules) before the worker
    says it is ready, so that a warm worker starts even its first job at once. torch
    alone is not enough: torchvision, imported by the first job, took 0.4 to 1.4 s of
    that job's start on a 2-core VM (bench/README.md, `dispatch_warm_first_ms`)."""
    from engines import inference, predict, training  # noqa: F401


def _run(conn: Connection, job: Job) -> bool:
    """Runs one job and reports its outcome; True if the server asked the worker to exit."""
    control = _Control(conn, job.task_id)
    try:
        message = settle(job.task_id, lambda: _execute(job, control))
    except (KeyboardInterrupt, SystemExit) as exc:  # the task fails, then the worker exits
        _send(conn, JobFailed(job.task_id, _reason(exc), traceback.format_exc()))
        raise
    release_job_memory(job.device)
    _send(conn, message)
    return control.shutdown


def release_job_memory(device: str) -> None:
    """Frees what an ended job held (local and Ray workers call it before its end is
    told): the server frees its slot on that message and may admit a task that needs
    the room (a preempted training's memory goes to the task that preempted it), and
    NVML, which admission reads, counts what torch's allocator keeps cached as used."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def settle(
    task_id: str, run: Callable[[], JobResult]
) -> JobDone | JobFailed | JobCancelledMsg | JobPreemptedMsg:
    """Runs a job to its end and turns how it ended into the message that reports it:
    the one place that decides what a failed job tells the user (local and Ray workers)."""
    try:
        return JobDone(task_id, run())
    except JobCancelled:
        return JobCancelledMsg(task_id)
    except JobPreempted as exc:
        return JobPreemptedMsg(task_id, exc.preemption)
    except JobError as exc:
        return JobFailed(task_id, str(exc))
    except ServerGone:
        raise
    except Exception as exc:  # the task fails, the worker lives on
        return JobFailed(task_id, _reason(exc), traceback.format_exc())


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# Batch jobs (training, batch inference) run this much nicer than the worker, so that
# when the cores are contended the CPU goes first to what someone is waiting on: the
# server and the serving workers answering Predict. Uncontended, it changes nothing.
# bench/README.md ("Isolation") has the measurements.
BATCH_NICE = 10


def run_batch_job(
    job: TrainingJob | InferenceJob,
    emit: Callable[[JobEvent], None],
    should_stop: Callable[[], bool],
    should_yield: Callable[[], bool],
) -> JobResult:
    """Trains or runs batch inference; raises JobCancelled, JobPreempted (training only:
    batch inference is never preempted), JobError or a bug's exception."""
    if isinstance(job, TrainingJob):
        from engines import training

        return _nicer(lambda: training.train(job, emit, should_stop, should_yield))
    from engines.inference import run_inference

    return _nicer(lambda: run_inference(job, emit, should_stop))


def lower_thread_priority() -> None:
    """Makes the calling thread BATCH_NICE nicer than it is (at most 19), on Linux; a
    sandbox that refuses is ignored: the work runs anyway."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + BATCH_NICE))


def _nicer(run: Callable[[], JobResult]) -> JobResult:
    """Runs `run` on a thread of its own whose nice value is BATCH_NICE above the worker's.

    Linux keeps a nice value per thread, and the threads torch's OpenMP starts for a
    thread's parallel work inherit its value. Anyone may raise a nice value but only a
    privileged process may lower it again, so the job gets a thread that ends with it and
    the worker's main thread, which serves Predict batches in later jobs, keeps its own.
    Elsewhere a nice value is the whole process's: the job runs as it is.
    """
    if not sys.platform.startswith("linux"):
        return run()

    def nicer_run() -> JobResult:
        lower_thread_priority()
        return run()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tandem-batch-job") as thread:
        return thread.submit(nicer_run).result()


def _execute(job: Job, control: _Control) -> JobResult:
    if isinstance(job, ServeJob):
        return _serve(job, control)
    return run_batch_job(job, control.emit, control.should_stop, control.should_yield)


# How often an idle serving job looks whether one of its passes broke.
_FAILURE_CHECK_S = 0.5
# The most forward passes a served model runs at once (`predict_max_streams` is capped
# at it).
MAX_FORWARD_PASSES = 16


class ForwardPasses:
    """A served model's batches, answered on its forward lanes (`ForwardLanes`): on the
    CPU a batch with an image per narrow lane is cut into one-thread parts run side by
    side (`engines.served_batches`); a smaller batch, and every batch on a GPU, goes
    whole: on the wide lane with all the model's threads when it finds the model idle,
    on a narrow lane while batches wait together (small batches scale better across
    passes than across intra-op threads: bench/README.md, "Replicas or threads"). Each
    reply goes out from the lane that finished it."""

    def __init__(
        self, lanes: ForwardLanes, predictor: Predictor, reply: Callable[[PredictReply], None]
    ) -> None:
        self._lanes = lanes
        self._predictor = predictor
        self._reply = reply
        self._lock = threading.Lock()
        self.answered = 0
        # What broke a pass (a bug, no memory, a reply that cannot be sent): the job
        # fails with it.
        self.failure: BaseException | None = None

    def submit(self, batch: PredictBatch) -> None:
        answer_on_lanes(self._lanes, self._predictor, batch).add_done_callback(self._answered)

    def _answered(self, done: Future[PredictReply]) -> None:
        failure = done.exception()
        if failure is not None:
            self.failure = failure
            return
        reply = done.result()
        try:
            self._reply(reply)
        except ServerGone:
            return  # the main loop sees the pipe break too
        except BaseException as exc:
            self.failure = exc
            return
        with self._lock:
            self.answered += len(reply.results)


def _serve(job: ServeJob, control: _Control) -> JobResult:
    """Holds the model and answers `PredictBatch`es until cancelled."""
    from engines.artifacts import ArtifactError
    from engines.predict import from_path

    # More passes than MAX_FORWARD_PASSES never come at once: the server caps a model's
    # streams at it (config checks it).
    lanes = ForwardLanes(job.num_threads, MAX_FORWARD_PASSES)
    try:
        # Loaded on the wide lane, whose OpenMP threads the passes use (ForwardLanes).
        predictor = lanes.call(lambda: from_path(job.model_path, job.device))
    except ArtifactError as exc:
        lanes.close()
        raise JobError(str(exc)) from None
    except BaseException:
        lanes.close()
        raise
    control.emit(
        JobEvent(f"serving {job.model_path} on {job.device} ({predictor.preparation.describe()})")
    )
    passes = ForwardPasses(lanes, predictor, control.send)
    try:
        while not control.cancelled:
            if passes.failure is not None:
                raise passes.failure
            try:
                # Waits in slices, so that a pass that broke ends the job while idle.
                if not control.conn.poll(_FAILURE_CHECK_S):
                    continue
                message = control.conn.recv()
            except (EOFError, OSError):
                raise ServerGone from None
            if isinstance(message, PredictBatch) and message.task_id == job.task_id:
                passes.submit(message)
            elif isinstance(message, SetThreads) and message.task_id == job.task_id:
                lanes.set_threads(message.threads)
            else:
                control.note(message)
    finally:
        lanes.close()  # waits for the passes in flight: their replies still go out
    raise JobCancelled(f"unloaded after {passes.answered} predictions")


def _send(conn: Connection, message: object) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, EOFError, OSError):
        raise ServerGone from None
