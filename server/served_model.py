"""One served model as the model server sees it: its waiting requests, the batch being
gathered, the batches in flight in its worker, and how their answers get back.

Everything runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import grpc

from engines.jobs import Pixels, Prediction
from engines.protocol import PredictReply
from server.errors import ServiceError, invalid_argument
from server.models import ModelInfo


@dataclass(frozen=True)
class ImageAnswer:
    """One image's answer: its top-k, and its probabilities (float32 bytes, one per
    class) when they were asked for, else empty."""

    predictions: list[Prediction]
    probabilities: bytes = b""


@dataclass
class Pending:
    """One image of a Predict or ModelInfer call, waiting for its answer."""

    image: bytes | Pixels
    top_k: int
    future: asyncio.Future[ImageAnswer]
    # Also wants its whole probability vector (ModelInfer's output).
    probabilities: bool = False


@dataclass
class ServedModel:
    """One loaded (or loading) model."""

    job_id: str
    model: ModelInfo
    priority: int
    last_used: float
    device: str = ""
    queue: asyncio.Queue[Pending] = field(default_factory=asyncio.Queue)
    # The batch being gathered, and the batches sent to the worker by batch id.
    gathering: list[Pending] = field(default_factory=list)
    in_flight: dict[int, list[Pending]] = field(default_factory=dict)
    replies: dict[int, asyncio.Future[PredictReply]] = field(default_factory=dict)
    batch_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Set whenever a batch's answer is in: a stream is free again.
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    answering: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def busy(self) -> bool:
        return bool(self.gathering or self.in_flight) or not self.queue.empty()

    async def gather(self, max_batch: int, max_wait_s: float) -> list[Pending]:
        """The next batch: the first request to come, and those waiting beside it (for
        up to `max_wait_s` more), at most `max_batch`."""
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        # Gathering counts as busy: an idle check must not unload under this batch.
        self.gathering = batch
        deadline = loop.time() + max_wait_s
        while len(batch) < max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        batch = [p for p in batch if not p.future.done()]  # callers that gave up
        self.gathering = batch
        return batch

    def fail_all(self, error: ServiceError) -> None:
        """Fails every call waiting on this model, gathered, in flight or queued."""
        pending = list(self.gathering)
        for batch in self.in_flight.values():
            pending += batch
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        for item in pending:
            if not item.future.done():
                item.future.set_exception(error)
        for future in self.replies.values():
            if not future.done():
                future.cancel()
        self.gathering = []
        self.in_flight.clear()


def answer_all(batch: list[Pending], reply: PredictReply) -> None:
    """Hands each image of a batch its answer, or INVALID_ARGUMENT for an unreadable one."""
    probabilities = reply.probabilities or [b""] * len(batch)
    for pending, result, vector in zip(batch, reply.results, probabilities, strict=True):
        if pending.future.done():
            continue
        if isinstance(result, str):
            pending.future.set_exception(invalid_argument(result))
        else:
            wanted = vector if pending.probabilities else b""
            pending.future.set_result(ImageAnswer(result[: pending.top_k], wanted))


async def answers_of(pending: list[Pending]) -> list[ImageAnswer]:
    """The answers of one call's images, in order. An unreadable image fails the call
    with INVALID_ARGUMENT naming it (when there are several); whatever else the call no
    longer waits for is dropped: an image still waiting is skipped by its batch, and an
    error no one reads is not logged."""
    answers: list[ImageAnswer] = []
    try:
        for number, item in enumerate(pending, 1):
            try:
                answers.append(await item.future)
            except ServiceError as exc:
                if len(pending) == 1 or exc.code is not grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                raise invalid_argument(f"image {number} of {len(pending)}: {exc}") from None
        return answers
    finally:
        for item in pending:
            if not item.future.done():
                item.future.cancel()
            elif not item.future.cancelled():
                item.future.exception()
