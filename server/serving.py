"""Online Predict and the Open Inference Protocol's ModelInfer: trained models held
loaded in workers, answering with dynamic batching.

A served model lives in one worker process and holds one inference slot of its device
for as long as it is loaded; it gets that slot from the arbiter like any task, at the
priority of the request that loads it. Requests for a loaded model go straight to its
worker and never queue behind batch tasks.

Batching: each image of a call waits on its own, so the images of ModelInfer calls and
Predict calls share forward passes. An image that finds a free stream goes at once (with
whatever waits beside it, up to `predict_max_batch`); images that arrive while every
stream is busy form the next batch. A model has as many streams as it has CPU threads,
at most `predict_max_streams`: its worker runs the batches in flight at once, the
threads split between them. So under load requests share forward passes, and a lone request
never waits for company (unless `predict_max_wait_s` asks for it).

Threads: a served model's share of its device's cores follows the jobs running there
(`ThreadShare`); one that has been idle for `IDLE_SHARE_S` gives its share to the
batch jobs beside it until its next request.

A served model gives its slot back when it has been idle for `serve_idle_s`, when a
more urgent task waits for its slot (checked after every pass of the arbiter), or when
a newer model needs its place among the `max_served_models`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict

import grpc

from engines.executor import Executor, JobOutcome, Outcome
from engines.jobs import JobEvent, Pixels, Prediction, ServeJob
from engines.protocol import PredictBatch, PredictReply
from scheduler import Admission, Kind, QueueFull, Request
from scheduler.devices import is_gpu
from scheduler.memory import Shape
from server.config import ServerConfig
from server.dispatcher import DeviceGone, Dispatcher
from server.errors import ServiceError, failed_precondition, resource_exhausted
from server.memory import MemoryPlanner
from server.models import ModelInfo
from server.served_model import ImageAnswer, Pending, ServedModel, answer_all, answers_of
from server.thread_share import Role, ThreadShare

log = logging.getLogger(__name__)

Key = tuple[str, tuple[str, ...]]  # (model file, candidate devices)

# A served model idle this long gives its share of the cores to the batch jobs beside
# it (until its next request): long enough not to swap counts between two requests of
# a steady caller, short enough that an idle model leaves training its cores.
IDLE_SHARE_S = 3.0


class ModelServer:
    """Serves Predict requests; the JobSink of the serving jobs it starts."""

    def __init__(
        self,
        config: ServerConfig,
        dispatcher: Dispatcher,
        planner: MemoryPlanner,
        threads: ThreadShare,
        executor: Executor,
    ) -> None:
        self._config = config
        self._dispatcher = dispatcher
        self._planner = planner
        self._threads = threads
        self._executor = executor
        self._maintainer: asyncio.Task[None] | None = None
        self._served: OrderedDict[Key, ServedModel] = OrderedDict()
        self._by_job: dict[str, ServedModel] = {}
        self._closed = False
        # Forward passes run, images answered, and the most batches a model had in
        # flight at once, for operators and tests.
        self.batches = 0
        self.images = 0
        self.most_in_flight = 0

    async def predict(
        self,
        model: ModelInfo,
        candidates: tuple[str, ...],
        image: bytes,
        top_k: int,
        priority: int,
    ) -> tuple[list[Prediction], str]:
        """The top-k predictions for `image`, and the device that computed them."""
        answers, device = await self.answer(model, candidates, [image], top_k, priority)
        return answers[0].predictions, device

    async def answer(
        self,
        model: ModelInfo,
        candidates: tuple[str, ...],
        images: list[bytes | Pixels],
        top_k: int,
        priority: int,
        *,
        probabilities: bool = False,
    ) -> tuple[list[ImageAnswer], str]:
        """Each image's top-k (and with `probabilities` its probability vector), in order,
        and the device that computed them. INVALID_ARGUMENT names an unreadable image."""
        if self._closed:
            raise _unavailable("the server is shutting down; retry on another")
        key = (model.path, candidates)
        served = self._served.get(key)
        if served is None:
            served = self._load(key, model, candidates, priority)
        self._served.move_to_end(key)
        loop = asyncio.get_running_loop()
        pending = [Pending(image, top_k, loop.create_future(), probabilities) for image in images]
        for item in pending:
            served.queue.put_nowait(item)
        try:
            return await answers_of(pending), served.device
        finally:
            served.last_used = loop.time()

    @property
    def accepting(self) -> bool:
        """Whether calls are taken (not once the server has begun to stop)."""
        return not self._closed

    def maintain(self) -> None:
        """Gives back the slots of served models that are idle too long, or whose slot a
        more urgent task is waiting for, and the cores of those idle for a moment."""
        now = asyncio.get_running_loop().time()
        arbiter = self._dispatcher.arbiter
        for key, served in list(self._served.items()):
            if not served.device or served.busy:
                continue
            urgent = arbiter.most_urgent_waiting(served.device, Kind.INFERENCE)
            if urgent is not None and urgent < served.priority:
                self._unload(key, served, f"a more urgent task (priority {urgent}) needs its slot")
            elif now - served.last_used >= self._config.serve_idle_s:
                self._unload(key, served, f"idle for {self._config.serve_idle_s:g} s")
            elif now - served.last_used >= IDLE_SHARE_S:
                self._threads.pause(served.job_id)

    def waiting(self) -> int:
        """Requests waiting for a batch, over every served model (for operators and tests)."""
        return sum(served.queue.qsize() for served in self._served.values())

    def loaded(self) -> list[tuple[str, str, str]]:
        """(job id, model file, device) of every served model (for operators and tests)."""
        return [(s.job_id, s.model.path, s.device) for s in self._served.values()]

    async def start(self) -> None:
        """Starts checking, after every pass of the arbiter, whether a served model should
        give its slot back (see `maintain`)."""
        self._maintainer = asyncio.create_task(self._maintain_forever())

    async def close(self) -> None:
        self._closed = True
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        served = list(self._by_job.values())
        for entry in served:
            entry.fail_all(_unavailable("the server is shutting down; retry"))
        runners = [entry.runner for entry in served if entry.runner is not None]
        runners += [task for entry in served for task in entry.answering]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    # -- JobSink for serving jobs ------------------------------------------------------

    def job_event(self, task_id: str, event: JobEvent) -> None:
        log.debug("serving job %s: %s", task_id, event.message)

    def job_reply(self, task_id: str, reply: PredictReply) -> None:
        served = self._by_job.get(task_id)
        future = served.replies.pop(reply.batch_id, None) if served else None
        if future is not None and not future.done():
            future.set_result(reply)

    def job_finished(self, task_id: str, outcome: JobOutcome) -> None:
        self._threads.leave(task_id)
        served = self._by_job.pop(task_id, None)
        if served is None:
            return
        for key, entry in list(self._served.items()):
            if entry is served:
                del self._served[key]
        if outcome.outcome is Outcome.CANCELLED:
            error = _unavailable("the model was unloaded; retry")
        else:
            log.warning("served model %s ended: %s", served.model.path, outcome.error)
            error = _unavailable(f"the worker serving the model stopped ({outcome.error}); retry")
        served.fail_all(error)
        if served.runner is not None:
            served.runner.cancel()
        self._dispatcher.release(task_id)

    # -- internals -----------------------------------------------------------------------

    async def _maintain_forever(self) -> None:
        while True:
            await self._dispatcher.next_pass()
            try:
                self.maintain()
            except Exception:  # one bad pass must not end the upkeep of served models
                log.exception("could not check the served models")

    async def _admit(self, request: Request) -> Admission:
        """A slot for a served model, by its request's priority; errors as statuses."""
        try:
            return await self._dispatcher.admit(request)
        except QueueFull as exc:
            raise resource_exhausted(str(exc)) from None
        except DeviceGone as exc:
            raise failed_precondition(f"{exc}; no device left to run on") from None

    def _load(
        self, key: Key, model: ModelInfo, candidates: tuple[str, ...], priority: int
    ) -> ServedModel:
        if len(self._served) >= self._config.max_served_models:
            self._make_room()
        served = ServedModel(
            job_id=f"serve-{uuid.uuid4().hex[:12]}",
            model=model,
            priority=priority,
            last_used=asyncio.get_running_loop().time(),
        )
        self._served[key] = served
        self._by_job[served.job_id] = served
        served.runner = asyncio.create_task(self._run(served, candidates))
        return served

    def _make_room(self) -> None:
        for key, served in self._served.items():  # least recently used first
            if not served.busy and served.device:
                self._unload(key, served, "its place is needed by another model")
                return
        raise resource_exhausted(
            f"all {self._config.max_served_models} served models are busy; retry shortly"
        )

    def _stop_serving(self, served: ServedModel, why: str) -> None:
        for key, entry in list(self._served.items()):
            if entry is served:
                self._unload(key, served, why)
                return
        self._executor.cancel(served.job_id)

    def _unload(self, key: Key, served: ServedModel, why: str) -> None:
        log.info("unloading %s from %s: %s", served.model.path, served.device, why)
        self._served.pop(key, None)
        self._executor.cancel(served.job_id)

    async def _run(self, served: ServedModel, candidates: tuple[str, ...]) -> None:
        """Gets a slot, starts the serving job, then feeds it batches until it ends."""
        try:
            shape = Shape(
                served.model.architecture,
                self._config.predict_max_batch,
                served.model.image_size,
                Kind.INFERENCE,
            )
            memory_bytes, fitting = self._planner.plan(shape, candidates)
            admission = await self._admit(
                Request(
                    served.job_id,
                    Kind.INFERENCE,
                    served.priority,
                    fitting,
                    memory_bytes=memory_bytes,
                )
            )
        except ServiceError as exc:
            self._abandon(served, exc)
            return
        served.device = admission.device
        job = ServeJob(
            task_id=served.job_id,
            model_path=served.model.path,
            device=admission.device,
            num_threads=self._threads.join(served.job_id, admission.device, Role.SERVING),
        )
        try:
            self._executor.serve(job, self)
        except Exception as exc:
            log.exception("could not start serving %s", served.model.path)
            self._threads.leave(served.job_id)
            self._dispatcher.release(served.job_id)
            self._abandon(served, _unavailable(f"could not load the model: {exc}"))
            return
        try:
            await self._batches(served)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug, not a user error: fail what waits, give the slot back, stay usable.
            log.exception("serving %s failed", served.model.path)
            served.fail_all(ServiceError(grpc.StatusCode.INTERNAL, "prediction failed"))
            self._stop_serving(served, "its batch loop failed")

    def _streams(self, served: ServedModel) -> int:
        """Batches the model may have in flight: one per thread it has, within the cap;
        one on a GPU, where the memory admitted for the model is one batch's."""
        if is_gpu(served.device):
            return 1
        threads = self._threads.threads(served.job_id) or 1
        return max(1, min(self._config.predict_max_streams, threads))

    async def _batches(self, served: ServedModel) -> None:
        """Gathers requests into batches and sends each to the worker as soon as one of
        the model's streams is free; `_answer` hands each batch's answers back."""
        loop = asyncio.get_running_loop()
        while True:
            while len(served.in_flight) >= self._streams(served):
                served.answered.clear()
                await served.answered.wait()
            batch = await served.gather(
                self._config.predict_max_batch, self._config.predict_max_wait_s
            )
            if not batch:
                continue
            batch_id = next(served.batch_ids)
            reply: asyncio.Future[PredictReply] = loop.create_future()
            served.replies[batch_id] = reply
            served.in_flight[batch_id] = batch
            served.gathering = []
            self.most_in_flight = max(self.most_in_flight, len(served.in_flight))
            # An idle model gets its cores back first: the new count goes down the
            # pipe ahead of the batch.
            self._threads.resume(served.job_id)
            top_k = max(p.top_k for p in batch)
            wanted = any(p.probabilities for p in batch)
            message = PredictBatch(
                served.job_id, batch_id, [p.image for p in batch], top_k, probabilities=wanted
            )
            if not self._executor.send(served.job_id, message):
                return  # the job is ending; job_finished fails what is pending
            task = asyncio.create_task(self._answer(served, batch_id, batch, reply))
            served.answering.add(task)
            task.add_done_callback(served.answering.discard)

    async def _answer(
        self,
        served: ServedModel,
        batch_id: int,
        batch: list[Pending],
        reply: asyncio.Future[PredictReply],
    ) -> None:
        try:
            message = await reply
        except asyncio.CancelledError:
            if reply.cancelled():
                return  # the job ended: job_finished has failed the batch's callers
            raise
        served.in_flight.pop(batch_id, None)
        served.last_used = asyncio.get_running_loop().time()
        served.answered.set()
        self.batches += 1
        self.images += len(batch)
        try:
            answer_all(batch, message)
        except Exception:  # a reply out of step with its batch: a bug, never a hang
            log.exception("serving %s: a bad reply to batch %d", served.model.path, batch_id)
            error = ServiceError(grpc.StatusCode.INTERNAL, "prediction failed")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)

    def _abandon(self, served: ServedModel, error: ServiceError) -> None:
        """The model never got a slot: fail what waits for it and forget it."""
        self._by_job.pop(served.job_id, None)
        for key, entry in list(self._served.items()):
            if entry is served:
                del self._served[key]
        served.fail_all(error)


def _unavailable(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message)
