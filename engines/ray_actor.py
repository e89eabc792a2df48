"""What runs on a Ray node: a warm actor per device that runs Tandem's jobs, and a probe
that reads a node's GPU memory.

`DeviceActor` is the Ray twin of a local worker process (engines/worker.py), and runs
the same job functions (`run_batch_job`, `settle`, `answer_on_lanes`). It imports torch once,
then runs one job at a time in a thread of its own while its other methods stay
answerable (a threaded actor): `poll` hands the job's messages to the server, `cancel`
asks the job to stop at its next batch boundary (a cancel that overtakes its job's start
is remembered, and the job then ends at once), `predict` answers a batch of a served
model. An actor between jobs holds no served model.

Events are lossless and in order: the job's messages are numbered from 1 in a
`Mailbox`, and `poll(after=n)` returns those after n, blocking a while when there are
none. The server acknowledges message n only by asking for what comes after it, so a
reply lost on the way is simply sent again; nothing is dropped before that.

The classes here are plain Python; the executor makes them Ray actors with
`ray.remote(...)`, so this module imports no Ray and can be tested without a cluster.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections import deque
from collections.abc import Callable
from itertools import islice

from engines.forward_lanes import ForwardLanes, LanesClosed
from engines.jobs import (
    InferenceJob,
    JobCancelled,
    JobError,
    JobEvent,
    JobResult,
    ServeJob,
    TrainingJob,
)
from engines.protocol import (
    FromWorker,
    Job,
    JobCancelledMsg,
    JobDone,
    JobEventMsg,
    JobFailed,
    JobPreemptedMsg,
    PredictBatch,
    PredictReply,
)
from engines.served_batches import answer_on_lanes
from engines.worker import (
    MAX_FORWARD_PASSES,
    preload,
    release_job_memory,
    run_batch_job,
    settle,
    use_threads,
)

Numbered = tuple[int, FromWorker]
FINAL = (JobDone, JobFailed, JobCancelledMsg, JobPreemptedMsg)
# Cancels that came before their job, remembered (the latest this many) for its start.
EARLY_CANCELS = 256
# How long a start waits for the previous job's thread, which has posted its final
# message and is returning.
JOIN_S = 10.0


class Mailbox:
    """One job's messages, numbered from 1, kept until the reader acknowledges them."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._items: deque[Numbered] = deque()
        self._last = 0

    def put(self, message: FromWorker) -> int:
        """Adds `message`; returns its number."""
        with self._ready:
            self._last += 1
            self._items.append((self._last, message))
            self._ready.notify_all()
            return self._last

    def take(self, after: int, wait_s: float, limit: int = 512) -> list[Numbered]:
        """The messages numbered above `after` (at most `limit`), oldest first, waiting up
        to `wait_s` for one if there are none. Messages up to `after` are forgotten."""
        with self._ready:
            while self._items and self._items[0][0] <= after:
                self._items.popleft()
            if not self._items and wait_s > 0:
                self._ready.wait_for(lambda: bool(self._items), timeout=wait_s)
            return list(islice(self._items, limit))


class DeviceActor:
    """Runs Tandem jobs on one device (`cpu`, `cuda:N`) of one node, one job at a time."""

    def __init__(self, node: str, device: str) -> None:
        preload()  # torch, torchvision and the job modules, so jobs start without paying

        self._node = node
        self._device = device
        self._lock = threading.Lock()
        self._task_id = ""
        self._mailbox = Mailbox()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._yield = threading.Event()  # the training job is asked to yield its device
        self._loaded = threading.Event()  # a serving job's model is ready (or never will be)
        self._predictor: object = None
        self._answered = 0
        # The running job's thread count, as last set by the server.
        self._threads = 1
        # A serving job's forward lanes (its model loaded on the wide one).
        self._lanes: ForwardLanes | None = None
        self._early_cancels: dict[str, None] = {}  # ordered: the oldest goes first

    def pid(self) -> int:
        """The actor's process id; answering at all means torch is imported."""
        return os.getpid()

    def start(self, job: Job, model: bytes | None = None) -> None:
        """Starts `job` in its own thread and returns. `model`: the bytes of a serving
        job's model file, sent through Ray's object store (the file need not be here)."""
        with self._lock:
            if job.task_id == self._task_id:
                return  # asked again (the first reply was lost on the way): it has it
            if self._thread is not None:
                self._thread.join(JOIN_S)  # the last job posted its end; it is returning
                if self._thread.is_alive():
                    raise RuntimeError(f"{self._where()} still runs task {self._task_id}")
            self._task_id = job.task_id
            self._threads = job.num_threads
            self._mailbox = Mailbox()
            self._cancel = threading.Event()
            self._yield = threading.Event()
            self._loaded = threading.Event()
            self._predictor = None
            self._answered = 0
            if job.task_id in self._early_cancels:
                # Cancelled before it arrived: it ends at once, without running.
                del self._early_cancels[job.task_id]
                self._thread = None
                self._loaded.set()
                self._mailbox.put(JobCancelledMsg(job.task_id))
                return
            self._thread = threading.Thread(
                target=self._run, args=(job, model), name=f"tandem-{job.task_id}", daemon=True
            )
            self._thread.start()

    def poll(self, task_id: str, after: int, wait_s: float) -> list[Numbered]:
        """The job's messages numbered above `after`, waiting up to `wait_s` for one."""
        with self._lock:
            mailbox = self._mailbox if task_id == self._task_id else None
        return [] if mailbox is None else mailbox.take(after, wait_s)

    def cancel(self, task_id: str) -> None:
        """Asks the job to stop at its next batch boundary (a serving job: now)."""
        with self._lock:
            if task_id == self._task_id:
                self._cancel.set()
            else:  # its start may still be on the way: it will end as soon as it comes
                self._early_cancels[task_id] = None
                while len(self._early_cancels) > EARLY_CANCELS:
                    del self._early_cancels[next(iter(self._early_cancels))]

    def yield_job(self, task_id: str) -> None:
        """Asks the training job to save its whole state at its next batch boundary and
        end (JobPreemptedMsg). A job it does not hold is ignored."""
        with self._lock:
            if task_id == self._task_id:
                self._yield.set()

    def set_threads(self, task_id: str, threads: int) -> None:
        """The running job's new thread count, taken up at its next batch boundary (a
        serving job: its next forward pass)."""
        with self._lock:
            if task_id == self._task_id:
                self._threads = threads
                if self._lanes is not None:
                    self._lanes.set_threads(threads)

    def predict(self, batch: PredictBatch) -> PredictReply:
        """Answers a batch with the model the serving job `batch.task_id` holds."""
        self._loaded.wait()
        predictor, lanes = self._predictor, self._lanes
        if batch.task_id != self._task_id or predictor is None or lanes is None:
            raise JobError(f"{self._where()} holds no model for {batch.task_id}")
        # On the model's lanes, as in the local worker (engines/forward_lanes.py).
        try:
            pass_ = answer_on_lanes(lanes, predictor, batch)  # type: ignore[arg-type]
        except LanesClosed:
            raise JobError(f"{self._where()} is unloading the model of {batch.task_id}") from None
        reply = pass_.result()
        self._answered += len(batch.images)
        return reply

    # -- the job's thread -------------------------------------------------------------

    def _run(self, job: Job, model: bytes | None) -> None:
        mailbox = self._mailbox

        def emit(event: JobEvent) -> None:
            mailbox.put(JobEventMsg(job.task_id, event))

        final: FromWorker = JobFailed(job.task_id, "the job's thread ended without a result")
        try:
            problem = visibility_problem(job, self._node)
            if problem:
                final = JobFailed(job.task_id, problem)
            elif isinstance(job, ServeJob):
                final = settle(job.task_id, lambda: self._serve(job, model, emit))
            else:
                final = settle(
                    job.task_id,
                    lambda: run_batch_job(
                        job, emit, self._should_stop(job, emit), self._yield.is_set
                    ),
                )
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the end is still told
            reason = f"the job was stopped by {type(exc).__name__}"
            final = JobFailed(job.task_id, reason, traceback.format_exc())
        finally:
            self._loaded.set()  # a predict() still waiting gets its answer: no model
            # An idle actor holds no served model: its memory goes back now.
            self._predictor = None
            release_job_memory(self._device)
            mailbox.put(final)

    def _serve(
        self, job: ServeJob, model: bytes | None, emit: Callable[[JobEvent], None]
    ) -> JobResult:
        from engines.artifacts import ArtifactError
        from engines.predict import from_bytes, from_path

        lanes = ForwardLanes(job.num_threads, MAX_FORWARD_PASSES)
        try:
            try:
                # Loaded on the wide lane, whose OpenMP threads the passes use.
                if model is None:
                    predictor = lanes.call(lambda: from_path(job.model_path, job.device))
                else:
                    data = model
                    predictor = lanes.call(lambda: from_bytes(data, job.model_path, job.device))
            except ArtifactError as exc:
                raise JobError(str(exc)) from None
            with self._lock:
                self._predictor = predictor
                self._lanes = lanes
                lanes.set_threads(self._threads)
            self._loaded.set()
            emit(
                JobEvent(
                    f"serving {job.model_path} on {self._where()} "
                    f"({predictor.preparation.describe()})"
                )
            )
            self._cancel.wait()
        finally:
            with self._lock:
                self._lanes = None
            lanes.close()
        raise JobCancelled(f"unloaded after {self._answered} predictions")

    def _should_stop(
        self, job: TrainingJob | InferenceJob, emit: Callable[[JobEvent], None]
    ) -> Callable[[], bool]:
        """The batch job's check before each batch: cancelled? It also takes up a new
        thread count there, on the job's own thread."""
        using = job.num_threads

        def should_stop() -> bool:
            nonlocal using
            if self._cancel.is_set():
                return True
            if self._threads != using:
                using = self._threads
                emit(use_threads(using))
            return False

        return should_stop

    def _where(self) -> str:
        return f"{self._node}/{self._device}"


def visibility_problem(job: Job, node: str) -> str:
    """Why `node` cannot run `job` because it does not see the files the job names, or "".

    Tandem's cluster model is a shared filesystem: datasets, the data dir (checkpoints,
    models, predictions) and model files have the same paths on every node. A node where
    that does not hold fails the task with this sentence instead of a confusing error
    halfway through.
    """
    if isinstance(job, ServeJob):
        return ""  # its model travels through Ray's object store
    hint = f"Tandem expects the same paths on every node (a shared filesystem); mount it on {node}"
    if job.dataset != "synthetic" and not os.path.isdir(job.dataset):
        return f"{node} cannot see the dataset {job.dataset}: {hint}"
    if isinstance(job, InferenceJob) and not os.path.isfile(job.model_path):
        return f"{node} cannot see the model file {job.model_path}: {hint}"
    tasks_dir = os.path.dirname(os.path.normpath(job.output_dir))
    if not os.path.isdir(tasks_dir):
        return f"{node} cannot see the data dir ({tasks_dir}): {hint}"
    resume = getattr(job, "resume_from", "")
    if resume and not os.path.isfile(resume):
        return f"{node} cannot see the checkpoint {resume}: {hint}"
    return ""


def is_final(message: FromWorker) -> bool:
    """Whether `message` ends its job (nothing is numbered after it)."""
    return isinstance(message, FINAL)


class GpuProbe:
    """Reads the memory of its node's GPUs with NVML, which works only on their machine.

    Holds no CPU or GPU (the executor places it with num_cpus=0). A node where NVML
    cannot start reports no readings, and its GPUs then show no free memory, so
    memory-aware admission places nothing on them.
    """

    def __init__(self) -> None:
        import pynvml

        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
            self._count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError:
            self._count = 0

    def read(self) -> list[tuple[int, str, int, int, int]]:
        """(index, name, total, used, free bytes) per GPU NVML can read."""
        readings = []
        for index in range(self._count):
            try:
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                name = self._nvml.nvmlDeviceGetName(handle)
                info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except self._nvml.NVMLError:
                continue
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            readings.append((index, str(name), int(info.total), int(info.used), int(info.free)))
        return readings


__all__ = [
    "FINAL",
    "DeviceActor",
    "GpuProbe",
    "Mailbox",
    "is_final",
    "visibility_problem",
]
