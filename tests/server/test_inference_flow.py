"""Batch inference and online Predict through gRPC, with real workers and real models."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from PIL import Image

from tandem.v1 import (
    inference_service_pb2,
    resource_service_pb2,
    resources_pb2,
    task_pb2,
)
from tests.conftest import ServerThread, Stubs

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def png(colour: tuple[int, int, int], shade: int) -> bytes:
    image = Image.new("RGB", (24, 24), tuple(max(0, c - shade) for c in colour))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_folder(root: Path, per_class: int = 6) -> Path:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i:02d}.png").write_bytes(png(colour, 5 * i))
    return root


@pytest.fixture
def served(
    fresh_server: Callable[..., ServerThread],
) -> Iterator[tuple[ServerThread, Stubs, str, Path]]:
    """A server with a trained colour classifier (task id) and its ImageFolder."""
    server = fresh_server(predict_max_wait_s=0.05)
    folder = write_folder(server.config.dataset_roots[0] / "colours")
    stubs = Stubs.connect(server.port)
    task = stubs.train(
        model="resnet18", dataset="colours", image_size=24, epochs=3, batch_size=6, val_split=0.0
    )
    assert stubs.events(task.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    yield server, stubs, task.task_id, folder
    stubs.channel.close()


def infer(stubs: Stubs, **fields: object) -> task_pb2.Task:
    request = inference_service_pb2.InferRequest(**fields)  # type: ignore[arg-type]
    return stubs.inference.Infer(request, timeout=30).task


def predict(stubs: Stubs, image: bytes, **fields: object) -> inference_service_pb2.PredictResponse:
    request = inference_service_pb2.PredictRequest(image=image, **fields)  # type: ignore[arg-type]
    return stubs.inference.Predict(request, timeout=60)


def test_infer_over_the_training_folder_then_predict(
    served: tuple[ServerThread, Stubs, str, Path],
) -> None:
    _, stubs, train_id, folder = served
    task = infer(stubs, task_id=train_id, dataset="colours", top_k=2, device="cpu")
    assert task.kind == task_pb2.TASK_KIND_INFERENCE
    assert task.inference.model == "resnet18" and task.inference.image_size == 24
    events = stubs.events(task.task_id)
    assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    done = stubs.get(task.task_id)
    rows = [json.loads(line) for line in Path(done.output_path).read_text().splitlines()]
    assert len(rows) == 18  # one row per image
    assert {row["label"] for row in rows} == set(COLOURS)
    assert all(len(row["predictions"]) == 2 for row in rows)
    assert {p["label"] for row in rows for p in row["predictions"]} <= set(COLOURS)
    assert "accuracy" in done.metrics

    answer = predict(stubs, (folder / "red" / "00.png").read_bytes(), task_id=train_id)
    assert answer.device == "cpu"
    assert answer.predictions[0].label in COLOURS
    assert len(answer.predictions) == 3  # top_k defaults to 5, capped at 3 classes
    scores = [p.score for p in answer.predictions]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-4)


def test_concurrent_predicts_are_batched_and_match_single_answers(
    served: tuple[ServerThread, Stubs, str, Path],
) -> None:
    server, stubs, train_id, folder = served
    images = [p.read_bytes() for p in sorted(folder.rglob("*.png"))]
    alone = [predict(stubs, image, task_id=train_id) for image in images[:8]]
    assert server.service is not None
    model_server = server.service.model_server
    before = server.call(lambda: (model_server.batches, model_server.images))
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda im: predict(stubs, im, task_id=train_id), images[:8]))
    batches, answered = server.call(lambda: (model_server.batches, model_server.images))
    assert answered - before[1] == 8
    assert batches - before[0] < 8  # some requests shared a forward pass
    for one, many in zip(alone, together, strict=True):
        assert [p.label for p in one.predictions] == [p.label for p in many.predictions]
        for a, b in zip(one.predictions, many.predictions, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-5)


def test_prediction_errors(served: tuple[ServerThread, Stubs, str, Path]) -> None:
    server, stubs, train_id, folder = served
    image = (folder / "blue" / "01.png").read_bytes()
    junk = server.config.data_dir / "junk.pt"
    junk.write_bytes(b"definitely not a model")
    running_infer = infer(stubs, task_id=train_id, dataset="synthetic", device="cpu")
    invalid, missing = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    precondition = grpc.StatusCode.FAILED_PRECONDITION
    cases: list[tuple[dict[str, object], grpc.StatusCode]] = [
        ({"image": b"hello", "task_id": train_id}, invalid),
        ({"image": b"", "task_id": train_id}, invalid),
        ({"image": image}, invalid),
        (
            {"image": image, "task_id": train_id, "model_path": "x"},
            invalid,
        ),
        ({"image": image, "task_id": "nope"}, missing),
        ({"image": image, "task_id": running_infer.task_id}, precondition),
        ({"image": image, "model_path": str(junk)}, invalid),
        ({"image": image, "model_path": "/etc/passwd"}, grpc.StatusCode.PERMISSION_DENIED),
        ({"image": image, "task_id": train_id, "top_k": 0}, invalid),
        (  # the server sees no GPU (no_gpus), on any host
            {"image": image, "task_id": train_id, "device": "cuda"},
            precondition,
        ),
    ]
    for fields, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            predict(stubs, **fields)  # type: ignore[arg-type]
        assert info.value.code() == code, fields
    # A PNG header with garbage after it gets past the quick check, not past the decoder.
    with pytest.raises(grpc.RpcError) as info:
        predict(stubs, b"\x89PNG\r\n\x1a\n" + b"0" * 64, task_id=train_id)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        infer(stubs, model_path=str(junk), dataset="synthetic")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        infer(stubs, task_id=train_id, dataset="no-such-folder")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stubs.inference.Predict(
            inference_service_pb2.PredictRequest(image=image, task_id=train_id), timeout=0.001
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stubs.events(running_infer.task_id)


def test_ten_inference_tasks_with_a_limit_of_three(
    served: tuple[ServerThread, Stubs, str, Path],
) -> None:
    """The seed's scenario 2: ten datasets at once, at most three running."""
    _, stubs, train_id, _ = served
    stubs.resources.UpdateLimits(
        resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={"cpu": resources_pb2.ConcurrencyLimits(inference=3)}
        )
    )
    ids = [
        infer(stubs, task_id=train_id, dataset="colours", device="cpu").task_id for _ in range(10)
    ]
    for task_id in ids:
        assert stubs.events(task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    tasks = [stubs.get(t) for t in ids]
    edges = sorted(
        itertools.chain.from_iterable(
            ((t.start_time.ToNanoseconds(), 1), (t.end_time.ToNanoseconds(), -1)) for t in tasks
        )
    )
    running = peak = 0
    for _, step in edges:  # ends sort before starts at the same instant
        running += step
        peak = max(peak, running)
    assert peak <= 3


def test_an_idle_served_model_gives_its_slot_to_a_more_urgent_task(
    served: tuple[ServerThread, Stubs, str, Path],
) -> None:
    server, stubs, train_id, folder = served
    stubs.resources.UpdateLimits(
        resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={"cpu": resources_pb2.ConcurrencyLimits(inference=1)}
        )
    )
    predict(stubs, (folder / "red" / "00.png").read_bytes(), task_id=train_id, priority=9)
    assert server.service is not None
    model_server = server.service.model_server
    assert len(server.call(model_server.loaded)) == 1  # holds the only inference slot
    task = infer(stubs, task_id=train_id, dataset="colours", device="cpu", priority=2)
    assert stubs.events(task.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    assert server.call(model_server.loaded) == []


def test_real_digits_learned_through_the_service(fresh_server: Callable[..., ServerThread]) -> None:
    """scikit-learn's handwritten digits: train through Train, score the held-out fifth
    through Infer. Chance is 0.1; the pipeline must learn."""
    from sklearn.datasets import load_digits

    server = fresh_server()
    root = server.config.dataset_roots[0] / "digits"
    data = load_digits()
    for index, (pixels, label) in enumerate(zip(data.images, data.target, strict=True)):
        folder = root / ("held_out" if index % 5 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * (255 / 16)).astype("uint8")).save(folder / f"{index}.png")
    stubs = Stubs.connect(server.port)
    trained = stubs.train(
        model="resnet18", dataset="digits/train", image_size=16, epochs=3, batch_size=64
    )
    assert stubs.events(trained.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    scored = infer(stubs, task_id=trained.task_id, dataset="digits/held_out", device="cpu")
    assert stubs.events(scored.task_id)[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    result = stubs.get(scored.task_id)
    assert result.metrics["images"] == 360
    assert result.metrics["accuracy"] >= 0.8
    stubs.channel.close()
