"""A served model's batches on its forward lanes: answered whole, or split across the
narrow lanes and put back together (both executors: the local worker and the Ray actor).

Why split: a batch of several images that finds the model idle would take the wide lane,
one pass with all the model's threads. On the CPU, passes side by side on one thread each
answer more images per second than one pass with all the threads, and each part's images
are decoded on its own core too (measured on 2 cores, resnet18 224 px, the network
prepared: a batch of 4 as two one-thread passes of 2 took 72 images/s in-process, as one
two-thread pass of 4, 59; bench/README.md, "Replicas or threads"). So on the CPU a batch
with at least one image per narrow lane is cut into as many parts, in order; a lone image
keeps the wide lane and all the threads, which is what its latency needs. A GPU runs one
pass at a time: its batches go whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from engines.forward_lanes import ForwardLanes
from engines.jobs import Prediction
from engines.protocol import PredictBatch, PredictReply

if TYPE_CHECKING:
    from engines.predict import Predictor

__all__ = ["answer", "answer_on_lanes", "merge", "split"]


def answer(predictor: Predictor, batch: PredictBatch) -> PredictReply:
    """A served model's reply to one batch: per image, its top-k or why it is unreadable
    (and its probabilities, when the batch asks for them)."""
    from engines.predict import ImageError

    outcome, probabilities = predictor.answer_images(
        batch.images, batch.top_k, probabilities=batch.probabilities
    )
    results: list[list[Prediction] | str] = [
        str(r) if isinstance(r, ImageError) else r for r in outcome
    ]
    return PredictReply(batch.task_id, batch.batch_id, results, probabilities)


def split(batch: PredictBatch, parts: int) -> list[PredictBatch]:
    """`batch` cut into `parts` batches of consecutive images, as even as can be (the
    first ones one image longer), each with the batch's id; fewer when images run out."""
    count = len(batch.images)
    parts = max(1, min(parts, count))
    base, extra = divmod(count, parts)
    pieces: list[PredictBatch] = []
    start = 0
    for index in range(parts):
        end = start + base + (1 if index < extra else 0)
        pieces.append(
            PredictBatch(
                batch.task_id,
                batch.batch_id,
                batch.images[start:end],
                batch.top_k,
                probabilities=batch.probabilities,
            )
        )
        start = end
    return pieces


def merge(batch: PredictBatch, replies: list[PredictReply]) -> PredictReply:
    """The reply to `batch` from its parts' replies, in the parts' order."""
    return PredictReply(
        batch.task_id,
        batch.batch_id,
        [result for reply in replies for result in reply.results],
        [vector for reply in replies for vector in reply.probabilities],
    )


def answer_on_lanes(
    lanes: ForwardLanes, predictor: Predictor, batch: PredictBatch
) -> Future[PredictReply]:
    """Queues `batch` on the model's lanes, whole or in parts (module docstring); the
    future holds its reply, or the first exception a part raised. The future completes
    on the lane that finished last, so callbacks run there.

    Raises LanesClosed while the model is being unloaded."""
    narrow = lanes.narrow_lanes
    if predictor.device.type != "cpu" or narrow < 2 or len(batch.images) < narrow:
        return lanes.submit(lambda: answer(predictor, batch))
    pieces = split(batch, narrow)
    futures = lanes.submit_together([_answer_later(predictor, piece) for piece in pieces])
    whole: Future[PredictReply] = Future()
    remaining = len(futures)
    lock = threading.Lock()

    def part_done(_: Future[PredictReply]) -> None:
        nonlocal remaining
        with lock:
            remaining -= 1
            if remaining:
                return
        # Whatever happens here must complete `whole`: an exception raised in a done
        # callback is only logged, and a caller waiting on `whole` would wait forever.
        try:
            failures = [f.exception() for f in futures if f.exception() is not None]
            if failures:
                whole.set_exception(failures[0])
            else:
                whole.set_result(merge(batch, [f.result() for f in futures]))
        except BaseException as exc:
            whole.set_exception(exc)

    for future in futures:
        future.add_done_callback(part_done)
    return whole


def _answer_later(predictor: Predictor, piece: PredictBatch) -> Callable[[], PredictReply]:
    return lambda: answer(predictor, piece)
