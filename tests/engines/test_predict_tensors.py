"""`Predictor` with preprocessed tensors in (`Pixels`) and whole probability vectors out:
what the Open Inference Protocol's FP32 input and `probabilities` output rest on."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from engines.artifacts import load_artifact
from engines.jobs import Pixels
from engines.predict import ImageError, Predictor, decode_image
from engines.protocol import PredictBatch
from engines.served_batches import answer
from tests.engines.test_predict import CLASSES as LABELS
from tests.engines.test_predict import IMAGE_SIZE, png, write_model

CLASSES = len(LABELS)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    path = write_model(tmp_path_factory.mktemp("model") / "model.pt")
    return Predictor(load_artifact(str(path)), "cpu")


def pixels_of(predictor: Predictor, image: bytes) -> Pixels:
    """What a caller who preprocesses as the model does would send."""
    return Pixels(predictor.preprocess(decode_image(image)).numpy().tobytes())


def floats(data: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def test_a_preprocessed_tensor_gets_the_answer_of_its_image(predictor: Predictor) -> None:
    images = [png(seed) for seed in range(3)]
    from_files, _ = predictor.answer_images(images, top_k=CLASSES, probabilities=False)
    from_pixels, _ = predictor.answer_images(
        [pixels_of(predictor, image) for image in images], top_k=CLASSES, probabilities=False
    )
    for file_answer, pixel_answer in zip(from_files, from_pixels, strict=True):
        assert isinstance(file_answer, list) and isinstance(pixel_answer, list)
        assert [p.label for p in pixel_answer] == [p.label for p in file_answer]
        for a, b in zip(pixel_answer, file_answer, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-6)


def test_probabilities_cover_every_class_and_hold_the_top_k_scores(
    predictor: Predictor,
) -> None:
    images = [png(4), pixels_of(predictor, png(5))]
    results, vectors = predictor.answer_images(images, top_k=2, probabilities=True)

    assert len(vectors) == 2
    for result, vector in zip(results, vectors, strict=True):
        assert isinstance(result, list)
        values = floats(vector)
        assert len(values) == CLASSES
        assert math.fsum(values) == pytest.approx(1.0, abs=1e-5)
        for p in result:  # Predict's top-k scores are these very numbers
            assert values[p.index] == p.score
        assert result[0].score == max(values)


def test_a_tensor_of_another_size_or_with_nan_is_refused_in_its_place(
    predictor: Predictor,
) -> None:
    size = IMAGE_SIZE
    short = Pixels(b"\x00" * 12)
    nan = Pixels(torch.full((3, size, size), float("nan")).numpy().tobytes())
    results, vectors = predictor.answer_images([short, png(1), nan], 1, probabilities=True)

    assert isinstance(results[0], ImageError)
    assert f"a 3x{size}x{size} float32 image has {3 * size * size * 4}" in str(results[0])
    assert isinstance(results[1], list)
    assert isinstance(results[2], ImageError) and "NaN or infinite" in str(results[2])
    assert vectors[0] == vectors[2] == b"" and len(vectors[1]) == CLASSES * 4


def test_a_worker_answers_probabilities_only_when_the_batch_asks(predictor: Predictor) -> None:
    plain = answer(predictor, PredictBatch("serve-1", 1, [png(2)], top_k=1))
    asked = answer(predictor, PredictBatch("serve-1", 2, [png(2)], top_k=1, probabilities=True))

    assert plain.probabilities == [] and plain.results == asked.results
    assert len(asked.probabilities) == 1 and len(asked.probabilities[0]) == CLASSES * 4
