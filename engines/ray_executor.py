"""The Ray executor: admitted jobs run in warm Ray actors on the nodes of a Ray cluster.

Tandem's arbiter still decides everything Ray does not: which job runs next (priority,
aging), how many share a device (limits), whether a GPU has room (memory). It hands
this executor a job with a cluster device (`node-2/cpu`, `node-1/cuda:0`); the executor
runs it in a `DeviceActor` placed on that node with a hard node-affinity strategy and
a token share of the device's Ray resource (`num_cpus`, plus `num_gpus` on a GPU), so
Ray's accounting sees Tandem's work without becoming a second set of limits. Actors
are kept warm per device (torch imported, ready for the next job), as the local pools
keep worker processes.

Per running job the server keeps one follower, a coroutine on its event loop that
starts the job and then long-polls the actor for the job's numbered messages: events
reach the JobSink in order, on the loop thread, with nothing lost (see
engines/ray_actor.py). A served model's `PredictBatch` is a direct actor call whose
reply goes to the sink; its model file travels through Ray's object store, so Predict
works on a node that cannot read the server's disk.

A job is sent only to an actor that answers (placed on its node, torch imported); one
that does not within ACTOR_START_S ends the job `not_started`, which the server queues
again, and a device where no new actor can start is reported unusable, so that nothing
more waits for it. Calls that change nothing (poll, predict, and a start the actor has
seen) are asked again while an actor is briefly unreachable.

Cancel asks the actor to stop at the next batch boundary and kills it (`ray.kill`)
after the grace period. An actor that dies fails its job with the reason; if its node
left the cluster the failure is `interrupted` (a training job with a checkpoint is
queued again by the server) and the server is told the node is gone.

The server's side is passed to the constructor: a `ClusterListener` that hears of lost
nodes and unusable devices, and the function that splits a cluster device name into
its node and the node's own device (the scheduler owns device names; engines/ does not
import the scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import ray
from ray.exceptions import (
    ActorUnavailableError,
    ActorUnschedulableError,
    RayActorError,
    RayError,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from engines.executor import JobOutcome, JobSink, Outcome, ServingSink
from engines.executor_core import Background, Run, RunTable, WarmPool
from engines.jobs import InferenceJob, ServeJob, TrainingJob, first_line
from engines.process import WORKER_CUDA_ENV
from engines.protocol import Job, PredictBatch
from engines.ray_actor import DeviceActor
from engines.ray_cluster import CPU_SHARE, GPU_SHARE, RayCluster, RayNode

log = logging.getLogger(__name__)

# Threads of an actor: its job runs in a thread of its own; these answer poll, cancel
# and predict calls meanwhile.
ACTOR_CONCURRENCY = 8
# How long one poll waits on the actor for the job's next message.
POLL_WAIT_S = 2.0
# How long an actor may stay unreachable (its connection broke) before its job is
# given up; normally Ray reports the actor dead much sooner.
UNREACHABLE_S = 120.0
# How long an actor may take to be placed on its node and import torch before its device
# is deemed unable to take jobs (an idle warm actor answers at once).
ACTOR_START_S = 60.0
# Models kept in the object store for the next load (a served model's file, by path).
MODEL_CACHE = 8
# Ray picks GPU ids for fractional shares itself; Tandem's arbiter has already chosen the
# GPU (cuda:N), so the actor sees every GPU of its node, numbered by PCI bus as local
# workers number them, and uses that one.
_ALL_GPUS_VISIBLE = {
    "env_vars": {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1", **WORKER_CUDA_ENV}
}


class ClusterListener(Protocol):
    """Hears what the executor finds out about the cluster; called on the loop thread."""

    def node_left(self, name: str, why: str) -> None:
        """The node `name` was found gone (`why`: "node-2 (10.0.0.5) left the Ray
        cluster"). The listener stops admitting to its devices, calls
        `RayExecutor.node_lost`, then forgets them."""

    def device_unusable(self, device: str, why: str) -> None:
        """No actor could start on `device`: the listener admits nothing more there. The
        job that found it out is reported `not_started`."""


@dataclass(eq=False)
class _Actor:
    device: str  # the cluster's name for it: "node-1/cpu"
    node: RayNode
    handle: Any
    pid: int | None = None
    ready: bool = False  # it has answered once: placed, torch imported


@dataclass(eq=False)
class _Run(Run[_Actor]):
    follower: asyncio.Task[None] | None = None
    # Set once the actor has the job: calls about it (predict) must not overtake it.
    started: asyncio.Event = field(default_factory=asyncio.Event)
    sent: bool = False  # the job was sent to the actor: it may have begun
    # The thread count last given by the server; sent with the job, or after its start
    # (an actor drops a count for a job it does not hold yet).
    threads: int | None = None


class RayExecutor:
    """Runs jobs in warm actors on a Ray cluster's nodes (see the module docstring)."""

    def __init__(
        self,
        cluster: RayCluster,
        listener: ClusterListener,
        *,
        split_node: Callable[[str], tuple[str, str]],
        prewarm: int = 1,
        max_idle: int = 4,
        cancel_grace_s: float = 10.0,
        actor_class: type[DeviceActor] = DeviceActor,
    ) -> None:
        """`split_node` splits a cluster device: ("node-2", "cuda:0") for "node-2/cuda:0"."""
        self._cluster = cluster
        self._listener = listener
        self._split = split_node
        self._actor_class = ray.remote(actor_class)
        self._prewarm = prewarm
        self._runs: RunTable[_Run] = RunTable(
            cancel_grace_s=cancel_grace_s,
            noun="actor",
            ask_cancel=self._ask_cancel,
            ask_yield=self._ask_yield,
            kill=self._stop,
            release=self._release,
        )
        # Idle actors per device, warm for the next job.
        self._pool: WarmPool[_Actor] = WarmPool(max_idle=max_idle, retire=self._kill)
        self._background = Background()
        self._models: OrderedDict[tuple[str, int, int], Any] = OrderedDict()
        self._models_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for node in self._cluster.nodes():
            self.node_joined(node.name)

    # -- Executor --------------------------------------------------------------------------

    def submit(self, job: TrainingJob | InferenceJob, sink: JobSink) -> None:
        self._start(_Run(job, sink, self._actor_for(job)))

    def serve(self, job: ServeJob, sink: ServingSink) -> None:
        self._start(_Run(job, sink, self._actor_for(job), replies=sink))

    def cancel(self, task_id: str) -> None:
        self._runs.cancel(task_id)

    def preempt(self, task_id: str, grace_s: float) -> None:
        self._runs.preempt(task_id, grace_s)

    def set_threads(self, task_id: str, threads: int) -> None:
        run = self._runs.get(task_id)
        if run is None or run.done:
            return
        run.threads = threads
        if run.started.is_set():
            run.worker.handle.set_threads.remote(task_id, threads)

    def send(self, task_id: str, message: PredictBatch) -> bool:
        run = self._runs.get(task_id)
        if run is None or run.done:
            return False
        self._background.start(self._reply(run, message))
        return True

    async def close(self) -> None:
        self._closed = True
        await self._background.cancel()
        actors = [run.worker for run in self._runs.close()] + self._pool.clear()
        for actor in actors:
            self._kill(actor)
        with self._models_lock:
            self._models.clear()

    # -- the cluster changes ----------------------------------------------------------------

    def node_joined(self, name: str) -> None:
        """Keeps `prewarm` actors warm for the new node's CPU."""
        node = self._cluster.node(name)
        if self._closed or node is None or "cpu" not in node.devices:
            return
        self._pool.fill(f"{name}/cpu", self._prewarm, self._spawn)

    def node_lost(self, name: str, why: str) -> None:
        """The node `name` left: every job running there ends now, `interrupted`, with
        `why` ("node-2 (10.0.0.5) left the Ray cluster"); its idle actors are dropped."""
        for run in [r for r in self._runs.runs() if r.worker.node.name == name]:
            if run.sent:
                error, fresh = f"{why} while running the task", False
            else:
                error, fresh = f"{why} before the task began", True
            outcome = JobOutcome(Outcome.FAILED, error=error, interrupted=True, not_started=fresh)
            self._runs.finish(run, outcome, reuse=False)
        for actor in self._pool.drop(lambda device: self._split(device)[0] == name):
            self._kill(actor)

    # -- for operators and tests ------------------------------------------------------------

    def running(self) -> dict[str, int | None]:
        """task_id -> pid of the actor process running it (None until it is known)."""
        return {run.task_id: run.worker.pid for run in self._runs.runs()}

    # -- the transport: jobs to actors, messages back -----------------------------------------

    def _actor_for(self, job: Job) -> _Actor:
        if self._closed:
            raise RuntimeError("executor is closed")
        return self._pool.take(job.device) or self._spawn(job.device)

    def _start(self, run: _Run) -> None:
        self._runs.add(run)
        run.follower = self._background.start(self._follow(run))

    def _ask_cancel(self, run: _Run) -> None:
        run.worker.handle.cancel.remote(run.task_id)

    def _ask_yield(self, run: _Run) -> None:
        if run.started.is_set():
            run.worker.handle.yield_job.remote(run.task_id)
        else:  # an actor drops a yield for a job it does not hold yet
            self._background.start(self._yield_once_started(run))

    async def _yield_once_started(self, run: _Run) -> None:
        await run.started.wait()
        if not run.done:
            run.worker.handle.yield_job.remote(run.task_id)

    def _stop(self, run: _Run) -> None:
        self._kill(run.worker)  # its follower sees the actor die and ends the run

    def _release(self, run: _Run, reuse: bool) -> None:
        run.started.set()  # releases predictions still waiting for the start
        if run.follower is not None and run.follower is not asyncio.current_task():
            run.follower.cancel()
        actor = run.worker
        if reuse and not self._closed and self._cluster.node(actor.node.name) is not None:
            self._pool.park(actor)
        else:
            self._kill(actor)

    async def _follow(self, run: _Run) -> None:
        task_id = run.job.task_id
        local = self._split(run.job.device)[1]
        handle = run.worker.handle
        try:
            if not await self._ready(run):
                return
            model = None
            if isinstance(run.job, ServeJob):
                model = await asyncio.to_thread(self._model_ref, run.job.model_path)
            threads = run.threads or run.job.num_threads
            job = replace(run.job, device=local, num_threads=threads)
            run.sent = True
            await _unless_unreachable(handle.start, job, model)
            run.started.set()
            if run.threads is not None and run.threads != threads:  # changed meanwhile
                handle.set_threads.remote(task_id, run.threads)
            after = 0
            while not run.done:
                batch = await _unless_unreachable(handle.poll, task_id, after, POLL_WAIT_S)
                for seq, message in batch:
                    if seq != after + 1:  # cannot happen: the mailbox keeps every message
                        log.error("task %s: message %d follows %d", task_id, seq, after)
                    after = seq
                    self._runs.deliver(run, message, f"on {run.job.device}")
        except asyncio.CancelledError:
            raise
        except (RayActorError, ActorUnschedulableError) as exc:
            await self._actor_died(run, exc)
        except Exception as exc:
            log.exception("task %s could not run on %s", task_id, run.job.device)
            error = f"could not run on {run.job.device}: {_ray_reason(exc)}"
            self._runs.finish(run, JobOutcome(Outcome.FAILED, error=error), reuse=False)

    async def _ready(self, run: _Run) -> bool:
        """Whether the run's actor is up (placed on its node, torch imported). If not
        within ACTOR_START_S, the job ends `not_started` (the server queues it again):
        its node left, or a warm actor died while idle, or no new actor can be placed
        there (no room for its share, its set-up broken) and the device is reported
        unusable, so that nothing else is sent there to wait or fail."""
        actor = run.worker
        try:
            actor.pid = await asyncio.wait_for(actor.handle.pid.remote(), ACTOR_START_S)
            actor.ready = True
            return True
        except (RayError, TimeoutError) as exc:
            problem: BaseException = exc
        if run.done:
            return False
        if run.cancelling is not None:
            outcome = JobOutcome(Outcome.CANCELLED, error="cancelled before it began")
            self._runs.finish(run, outcome, reuse=False)
            return False
        device = run.job.device
        if isinstance(problem, TimeoutError):
            reason = f"none was placed and ready within {ACTOR_START_S:g} s"
        else:
            reason = _ray_reason(problem)
        if not await self._node_alive(actor.node):
            self._lose_node(actor.node)  # ends this run too
            return False
        if run.done:
            return False
        if actor.ready:  # a warm actor that died while idle: the next gets a new one
            error = f"the idle Ray actor for {device} was gone: {reason}"
        else:
            error = f"no Ray actor could start on {device}: {reason}"
            log.warning("%s; no more tasks are sent there", error)
            self._listener.device_unusable(device, error)
        outcome = JobOutcome(Outcome.FAILED, error=error, not_started=True)
        self._runs.finish(run, outcome, reuse=False)
        return False

    async def _node_alive(self, node: RayNode) -> bool:
        try:
            return await asyncio.to_thread(self._cluster.alive, node.node_id)
        except Exception:
            log.warning("cannot ask Ray whether %s is alive", node.describe(), exc_info=True)
            return False

    def _lose_node(self, node: RayNode) -> None:
        why = f"{node.describe()} left the Ray cluster"
        log.warning("%s", why)
        self._listener.node_left(node.name, why)  # the server calls node_lost in turn
        self.node_lost(node.name, why)

    async def _actor_died(self, run: _Run, exc: RayError) -> None:
        if run.done:
            return
        forced = self._runs.ended_by_force(run)
        if forced is not None:
            self._runs.finish(run, forced, reuse=False)
            return
        node = run.worker.node
        alive = await self._node_alive(node)
        if run.done:
            return
        if not alive:
            self._lose_node(node)
            return
        error = f"the Ray actor running the task on {run.job.device} died: {_ray_reason(exc)}"
        log.warning("task %s: %s", run.job.task_id, error)
        self._runs.finish(run, JobOutcome(Outcome.FAILED, error=error), reuse=False)

    async def _reply(self, run: _Run, message: PredictBatch) -> None:
        await run.started.wait()
        if run.done:
            return  # the job ended first; its sink has been told
        try:
            # A prediction changes nothing on the actor: asked again while unreachable.
            reply = await _unless_unreachable(run.worker.handle.predict, message)
        except RayActorError as exc:
            # Ended here too (not left to the follower), so that the callers waiting
            # for this batch hear of it whatever the follower sees.
            await self._actor_died(run, exc)
            return
        except RayError as exc:
            # A prediction that raised is a broken served model: end it like a worker
            # whose serving loop failed, so waiting callers are told at once.
            log.error("serving job %s failed a batch: %s", run.job.task_id, exc)
            error = f"prediction failed on {run.job.device}: {_ray_reason(exc)}"
            self._runs.finish(run, JobOutcome(Outcome.FAILED, error=error), reuse=False)
            return
        self._runs.reply(run, reply)

    # -- actors -----------------------------------------------------------------------------

    def _spawn(self, device: str) -> _Actor:
        assert self._loop is not None, "start() the executor first"
        name, local = self._split(device)
        node = self._cluster.node(name)
        if node is None:
            raise RuntimeError(f"{name or device} is not a node of the Ray cluster now")
        gpu = local.startswith("cuda")
        options: dict[str, Any] = {
            # A GPU's actor holds a GPU share only: a GPU node may offer Ray no CPU.
            "num_cpus": 0 if gpu else CPU_SHARE,
            "num_gpus": GPU_SHARE if gpu else 0,
            "max_concurrency": ACTOR_CONCURRENCY,
            "max_restarts": 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False),
        }
        if gpu:
            options["runtime_env"] = _ALL_GPUS_VISIBLE
        handle = self._actor_class.options(**options).remote(node.name, local)
        actor = _Actor(device, node, handle)
        self._background.start(self._learn_pid(actor))
        log.debug("started an actor for %s", device)
        return actor

    async def _learn_pid(self, actor: _Actor) -> None:
        with contextlib.suppress(RayError):  # its job, if any, reports the actor's death
            actor.pid = await actor.handle.pid.remote()
            actor.ready = True

    @staticmethod
    def _kill(actor: _Actor) -> None:
        try:
            ray.kill(actor.handle, no_restart=True)
        except Exception:  # already dead, or Ray is shutting down
            log.debug("could not kill the actor for %s", actor.device, exc_info=True)

    def _model_ref(self, path: str) -> Any:
        """The model file at `path`, put into Ray's object store once per version of it
        (runs in a thread: it reads the file)."""
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        with self._models_lock:
            ref = self._models.get(key)
            if ref is not None:
                self._models.move_to_end(key)
                return ref
        with open(path, "rb") as file:
            ref = ray.put(file.read())
        with self._models_lock:
            self._models[key] = ref
            while len(self._models) > MODEL_CACHE:
                self._models.popitem(last=False)
        return ref


async def _unless_unreachable(method: Any, *args: Any) -> Any:
    """What the actor method returns for `args`, asked again while the actor is
    unreachable (its connection broke: Ray soon says whether it died, or its node), for
    up to UNREACHABLE_S. For idempotent methods only."""
    since = time.monotonic()
    while True:
        try:
            return await method.remote(*args)
        except ActorUnavailableError:
            if time.monotonic() - since > UNREACHABLE_S:
                raise
            await asyncio.sleep(0.5)


def _ray_reason(exc: BaseException) -> str:
    """The first line of what Ray (or the actor's own exception) said; for an actor
    whose `__init__` raised, that exception's line ("RuntimeError: ...")."""
    if isinstance(exc, RayActorError) and exc.actor_init_failed:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return f"it failed to start: {lines[-1]}"
    cause = getattr(exc, "cause", None)
    return first_line(cause if isinstance(cause, BaseException) else exc)
