"""A served model's batches on its lanes (`engines.served_batches`): a batch with an image
per narrow lane is cut into parts that run side by side on one thread each and come back
as one reply, in order, equal to the whole batch's; a lone image keeps every thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from engines.artifacts import load_artifact
from engines.forward_lanes import ForwardLanes
from engines.jobs import Pixels
from engines.predict import Predictor
from engines.protocol import PredictBatch, PredictReply
from engines.served_batches import answer, answer_on_lanes, merge, split
from tests.engines.test_predict import png, write_model

WAIT_S = 60


def batch(images: list[bytes | Pixels], probabilities: bool = False) -> PredictBatch:
    return PredictBatch("serve-1", 7, images, 3, probabilities=probabilities)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> WatchedPredictor:
    path = write_model(tmp_path_factory.mktemp("model") / "model.pt")
    return WatchedPredictor(load_artifact(str(path)), "cpu")


def test_split_cuts_consecutive_parts_as_even_as_can_be() -> None:
    images: list[bytes | Pixels] = [bytes([n]) for n in range(7)]
    parts = split(batch(images, probabilities=True), 3)
    assert [p.images for p in parts] == [images[0:3], images[3:5], images[5:7]]
    assert {(p.task_id, p.batch_id, p.top_k, p.probabilities) for p in parts} == {
        ("serve-1", 7, 3, True)
    }
    assert [p.images for p in split(batch(images[:2]), 4)] == [images[:1], images[1:2]]


def test_merge_puts_the_parts_replies_back_in_order() -> None:
    replies = [
        PredictReply("serve-1", 7, ["a", "b"], [b"1", b"2"]),
        PredictReply("serve-1", 7, ["c"], [b"3"]),
    ]
    whole = merge(batch([b"x", b"y", b"z"]), replies)
    assert whole == PredictReply("serve-1", 7, ["a", "b", "c"], [b"1", b"2", b"3"])


class WatchedPredictor(Predictor):
    """A real Predictor that notes the lane and thread count each of its passes ran with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def answer_images(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            name = threading.current_thread().name.rsplit("_", 1)[0]
            self.passes.append((name, torch.get_num_threads()))
        return super().answer_images(*args, **kwargs)


def run_on_lanes(
    predictor: WatchedPredictor, threads: int, whole: PredictBatch
) -> tuple[PredictReply, list[tuple[str, int]]]:
    predictor.passes.clear()
    lanes = ForwardLanes(threads=threads, max_narrow=4)
    try:
        reply = answer_on_lanes(lanes, predictor, whole).result(WAIT_S)
    finally:
        lanes.close()
    return reply, list(predictor.passes)


def test_a_batch_of_several_runs_in_parts_on_narrow_lanes_and_answers_as_one(
    predictor: WatchedPredictor,
) -> None:
    images: list[bytes | Pixels] = [png(seed) for seed in range(5)]
    images.insert(2, b"not an image")
    whole = batch(images, probabilities=True)
    reply, passes = run_on_lanes(predictor, 2, whole)
    assert passes == [("tandem-forward-narrow", 1)] * 2
    expected = answer(predictor, whole)
    assert (reply.task_id, reply.batch_id) == ("serve-1", 7)
    assert len(reply.results) == 6 and reply.results[2] == expected.results[2]
    assert isinstance(reply.results[2], str)
    for got, want in zip(reply.results, expected.results, strict=True):
        if isinstance(want, list):
            assert isinstance(got, list)
            assert [p.index for p in got] == [p.index for p in want]
            assert [p.score for p in got] == pytest.approx([p.score for p in want], abs=1e-5)
    assert len(reply.probabilities) == len(expected.probabilities) == 6
    for got_vector, want_vector in zip(reply.probabilities, expected.probabilities, strict=True):
        assert len(got_vector) == len(want_vector)
        if want_vector:  # empty for the unreadable image
            got_p = torch.frombuffer(bytearray(got_vector), dtype=torch.float32)
            want_p = torch.frombuffer(bytearray(want_vector), dtype=torch.float32)
            assert torch.allclose(got_p, want_p, atol=1e-5)


def test_a_lone_image_keeps_the_wide_lane_and_every_thread(predictor: WatchedPredictor) -> None:
    reply, passes = run_on_lanes(predictor, 2, batch([png(1)]))
    assert passes == [("tandem-forward-wide", 2)]
    assert len(reply.results) == 1


def test_fewer_images_than_narrow_lanes_go_whole(predictor: WatchedPredictor) -> None:
    _, passes = run_on_lanes(predictor, 3, batch([png(1), png(2)]))
    assert passes == [("tandem-forward-wide", 3)]


class Breaking(WatchedPredictor):
    """Raises for any batch that holds the image BOOM: a pass that breaks."""

    def answer_images(self, *args: Any, **kwargs: Any) -> Any:
        answers = super().answer_images(*args, **kwargs)  # noted as a pass
        if BOOM in args[0]:
            raise RuntimeError("the pass broke")
        return answers


BOOM = b"boom"


def test_one_part_that_fails_fails_the_whole_batch(tmp_path: Path) -> None:
    predictor = Breaking(load_artifact(str(write_model(tmp_path / "model.pt"))), "cpu")
    # Two parts: [png, png] answers, [BOOM, png] raises; the batch's reply is the failure.
    lanes = ForwardLanes(threads=2, max_narrow=4)
    try:
        future = answer_on_lanes(lanes, predictor, batch([png(1), png(2), BOOM, png(3)]))
        with pytest.raises(RuntimeError, match="the pass broke"):
            future.result(WAIT_S)
    finally:
        lanes.close()
    # Both parts ran, each once, side by side; only the breaking one's error came back.
    assert predictor.passes == [("tandem-forward-narrow", 1)] * 2
