"""The worker process: imports torch once, then runs jobs sent by the server, one at
a time, reporting events and the outcome over its pipe.

A job notices a cancel request at its next batch boundary (`should_stop` polls the
pipe without blocking). If the server goes away the pipe breaks and the worker exits.
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

from engines.jobs import JobCancelled, JobError, JobEvent, JobResult, TrainingJob
from engines.protocol import (
    CancelJob,
    Job,
    JobCancelledMsg,
    JobDone,
    JobEventMsg,
    JobFailed,
    RunJob,
    Shutdown,
    WorkerReady,
)

TrainFn = Callable[[TrainingJob, Callable[[JobEvent], None], Callable[[], bool]], JobResult]


class ServerGone(Exception):
    """The pipe to the server broke: nobody is left to report to."""


def worker_main(conn: Connection) -> None:
    """Entry point of a spawned worker process."""
    # Ctrl-C in a terminal reaches the whole process group; the server decides when
    # workers stop, so they ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch  # noqa: F401  (imported once here so jobs start without paying for it)

    from engines import training

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
                if _run(conn, message.job, training.train):
                    return  # a Shutdown arrived during the job
            except ServerGone:
                return
        # A CancelJob for a job that already ended is stale: nothing to do.


def _run(conn: Connection, job: Job, train: TrainFn) -> bool:
    """Runs one job and reports its outcome; True if the server asked the worker to exit."""
    cancelled = False
    shutdown = False

    def should_stop() -> bool:
        nonlocal cancelled
        try:
            while conn.poll():
                message = conn.recv()
                if (
                    isinstance(message, CancelJob) and message.task_id == job.task_id
                ) or isinstance(message, Shutdown):
                    cancelled = True
        except (EOFError, OSError):
            raise ServerGone from None
        return cancelled

    def emit(event: JobEvent) -> None:
        _send(conn, JobEventMsg(job.task_id, event))

    try:
        if isinstance(job, TrainingJob):
            result = train(job, emit, should_stop)
        else:  # pragma: no cover - guarded by the Job union
            raise JobError(f"this worker cannot run {type(job).__name__}")
    except JobCancelled:
        _send(conn, JobCancelledMsg(job.task_id))
    except JobError as exc:
        _send(conn, JobFailed(job.task_id, str(exc)))
    except ServerGone:
        raise
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        _send(conn, JobFailed(job.task_id, reason, traceback.format_exc()))
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
    else:
        _send(conn, JobDone(job.task_id, result))
    return shutdown


def _send(conn: Connection, message: object) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, EOFError, OSError):
        raise ServerGone from None
