"""Real, tiny batch inference runs on the CPU: the predictions file, events, labels and
accuracy, unreadable images, cancellation, failures, the submit-time folder check, and
a model trained on scikit-learn's handwritten digits scored on digits it never saw."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from engines import zoo
from engines.artifacts import save_artifact
from engines.datasets import (
    SYNTHETIC,
    SYNTHETIC_CLASSES,
    SYNTHETIC_PER_CLASS,
    load_dataset,
    scan_inference_folder,
    validate_inference_folder,
)
from engines.inference import predictions_path, run_inference
from engines.jobs import (
    InferenceJob,
    JobCancelled,
    JobError,
    JobEvent,
    JobResult,
    Level,
)
from engines.predict import Predictor

COLOURS = {"blue": (20, 40, 230), "green": (30, 200, 40), "red": (220, 30, 30)}
IMAGE_SIZE = 16


class Recorder:
    """An `emit` that keeps every event."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def __call__(self, event: JobEvent) -> None:
        self.events.append(event)

    def lines(self) -> list[str]:
        return [event.message for event in self.events]

    def progress(self) -> list[dict[str, float]]:
        return [event.metrics for event in self.events if event.metrics]

    def warnings(self) -> list[str]:
        return [e.message for e in self.events if e.level is Level.WARNING]


def never() -> bool:
    return False


def stop_after(calls: int) -> Callable[[], bool]:
    """A `should_stop` that turns true on its `calls`-th call."""
    seen = 0

    def should_stop() -> bool:
        nonlocal seen
        seen += 1
        return seen >= calls

    return should_stop


def write_model(
    path: Path, classes: tuple[str, ...] = tuple(COLOURS), broken: bool = False
) -> Path:
    torch.manual_seed(0)
    model = zoo.build_model("resnet18", len(classes), IMAGE_SIZE)
    if broken:
        with torch.no_grad():
            model.fc.weight.fill_(float("nan"))  # type: ignore[union-attr, operator]
    save_artifact(
        str(path),
        model=model,
        architecture="resnet18",
        classes=classes,
        image_size=IMAGE_SIZE,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        epoch=1,
        metrics={},
    )
    return path


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_class_folders(root: Path, per_class: int = 4) -> list[str]:
    """An ImageFolder of plain coloured images; returns the files relative to `root`."""
    files = []
    for name, colour in COLOURS.items():
        for index in range(per_class):
            file = f"{name}/{index}.{'jpg' if index == 0 else 'png'}"
            write_image(root / file, colour, (20 + index, 16 + 2 * index))
            files.append(file)
    return files


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "model.pt")


def make_job(tmp_path: Path, model: Path, dataset: str, **changes: object) -> InferenceJob:
    job = InferenceJob(
        task_id="i1",
        model_path=str(model),
        dataset=dataset,
        batch_size=5,
        top_k=2,
        device="cpu",
        output_dir=str(tmp_path / "out"),
        num_threads=1,
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def read_rows(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def test_an_image_folder_gets_one_row_per_image_labelled_by_its_folder(
    tmp_path: Path, model: Path
) -> None:
    files = write_class_folders(tmp_path / "data")
    emit = Recorder()
    result = run_inference(make_job(tmp_path, model, str(tmp_path / "data")), emit, never)

    assert result.output_path == predictions_path(str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == ["predictions.jsonl"]  # no temporary file left
    rows = read_rows(result.output_path)
    assert [row["file"] for row in rows] == files
    assert [row["label"] for row in rows] == [file.split("/")[0] for file in files]
    for row in rows:
        assert "error" not in row
        assert len(row["predictions"]) == 2
        scores = [p["score"] for p in row["predictions"]]
        assert scores == sorted(scores, reverse=True)
        assert all(list(COLOURS)[p["index"]] == p["label"] for p in row["predictions"])
    correct = sum(row["predictions"][0]["label"] == row["label"] for row in rows)
    assert result.metrics["accuracy"] == pytest.approx(correct / len(rows))
    assert result.metrics["images"] == len(rows) == 12
    assert result.metrics["errors"] == 0
    assert result.metrics["images_per_sec"] > 0
    assert "peak_memory_bytes" not in result.metrics

    start = emit.lines()[0]
    assert all(part in start for part in ("resnet18", "3 classes", "12 images", "cpu"))
    assert start.endswith("network: batch norm folded into convolutions and channels-last")
    progress = emit.progress()
    assert progress, "no progress events"
    assert progress[-1]["progress"] == 1.0
    assert progress[-1]["images"] == progress[-1]["images_total"] == 12
    assert "accuracy" in progress[-1]
    assert not emit.warnings()


def test_rows_do_not_depend_on_the_batch_size(tmp_path: Path, model: Path) -> None:
    write_class_folders(tmp_path / "data")
    one = run_inference(
        make_job(
            tmp_path, model, str(tmp_path / "data"), batch_size=1, output_dir=str(tmp_path / "a")
        ),
        Recorder(),
        never,
    )
    many = run_inference(
        make_job(
            tmp_path, model, str(tmp_path / "data"), batch_size=64, output_dir=str(tmp_path / "b")
        ),
        Recorder(),
        never,
    )
    for a, b in zip(read_rows(one.output_path), read_rows(many.output_path), strict=True):
        assert (a["file"], a["label"]) == (b["file"], b["label"])
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        scores_a = [p["score"] for p in a["predictions"]]
        assert scores_a == pytest.approx([p["score"] for p in b["predictions"]], abs=1e-5)


def test_an_image_folder_is_read_in_trainings_order(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "data")
    write_image(tmp_path / "data" / "red" / "deeper" / "x.png", (200, 0, 0), (8, 8))
    write_image(tmp_path / "data" / "red" / ".hidden.png", (200, 0, 0), (8, 8))
    folder = scan_inference_folder(str(tmp_path / "data"))
    trained = load_dataset(str(tmp_path / "data"), IMAGE_SIZE, seed=0).dataset
    samples = trained.samples  # type: ignore[attr-defined]
    assert folder.files == [os.path.relpath(path, tmp_path / "data") for path, _ in samples]
    assert folder.labels == [trained.classes[label] for _, label in samples]  # type: ignore[attr-defined]


def test_a_flat_folder_is_read_by_name_without_labels(tmp_path: Path, model: Path) -> None:
    for name in ("b.png", "a.png", "c.jpeg", "notes.txt", ".a_hidden.png"):
        if name.endswith("txt"):
            (tmp_path / "flat" / name).write_text("not an image")
        else:
            write_image(tmp_path / "flat" / name, (10, 120, 200), (24, 24))
    emit = Recorder()
    result = run_inference(make_job(tmp_path, model, str(tmp_path / "flat")), emit, never)
    rows = read_rows(result.output_path)
    assert [row["file"] for row in rows] == ["a.png", "b.png", "c.jpeg"]
    assert all(row["label"] is None and len(row["predictions"]) == 2 for row in rows)
    assert "accuracy" not in result.metrics
    assert all("accuracy" not in metrics for metrics in emit.progress())
    assert not emit.warnings()


def test_an_unreadable_image_fails_its_row_not_the_job(tmp_path: Path, model: Path) -> None:
    write_class_folders(tmp_path / "data", per_class=2)
    (tmp_path / "data" / "green" / "0b_broken.png").write_bytes(b"this is no PNG")
    result = run_inference(make_job(tmp_path, model, str(tmp_path / "data")), Recorder(), never)
    rows = read_rows(result.output_path)
    assert len(rows) == 7
    [broken] = [row for row in rows if "error" in row]
    assert broken["file"] == "green/0b_broken.png"
    assert broken["label"] == "green"
    assert "predictions" not in broken
    assert "image" in broken["error"]
    assert result.metrics["errors"] == 1
    assert result.metrics["images"] == 7
    good = [row for row in rows if "error" not in row]
    correct = sum(row["predictions"][0]["label"] == row["label"] for row in good)
    # Accuracy is over the images that were answered.
    assert result.metrics["accuracy"] == pytest.approx(correct / 6)


def test_dataset_classes_the_model_does_not_know_give_a_warning_and_no_accuracy(
    tmp_path: Path, model: Path
) -> None:
    for name in ("cat", "dog"):
        write_image(tmp_path / "pets" / name / "1.png", (90, 90, 90), (20, 20))
    emit = Recorder()
    result = run_inference(make_job(tmp_path, model, str(tmp_path / "pets")), emit, never)
    [warning] = emit.warnings()
    assert "dataset classes 'cat', 'dog' do not match the model's classes" in warning
    assert "accuracy" not in result.metrics
    assert [row["label"] for row in read_rows(result.output_path)] == ["cat", "dog"]


def test_some_unknown_classes_count_as_wrong(tmp_path: Path, model: Path) -> None:
    write_image(tmp_path / "mixed" / "red" / "1.png", COLOURS["red"], (20, 20))
    write_image(tmp_path / "mixed" / "purple" / "1.png", (128, 0, 128), (20, 20))
    emit = Recorder()
    result = run_inference(make_job(tmp_path, model, str(tmp_path / "mixed")), emit, never)
    [warning] = emit.warnings()
    assert "'purple' are not among the model's classes" in warning
    assert result.metrics["accuracy"] <= 0.5


def test_the_synthetic_set_is_labelled(tmp_path: Path) -> None:
    model = write_model(tmp_path / "shapes.pt", classes=SYNTHETIC_CLASSES)
    result = run_inference(
        make_job(tmp_path, model, SYNTHETIC, batch_size=64, top_k=1), Recorder(), never
    )
    rows = read_rows(result.output_path)
    assert len(rows) == len(SYNTHETIC_CLASSES) * SYNTHETIC_PER_CLASS
    assert rows[12]["file"] == "synthetic/000012"
    assert rows[0]["label"] == SYNTHETIC_CLASSES[0]
    assert rows[-1]["label"] == SYNTHETIC_CLASSES[-1]
    assert all(len(row["predictions"]) == 1 for row in rows)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_should_stop_cancels_at_a_batch_boundary_and_leaves_no_file(
    tmp_path: Path, model: Path
) -> None:
    write_class_folders(tmp_path / "data")
    emit = Recorder()
    job = make_job(tmp_path, model, str(tmp_path / "data"), batch_size=2)
    with pytest.raises(JobCancelled, match="batch 3 of 6"):
        run_inference(job, emit, stop_after(3))
    assert os.listdir(tmp_path / "out") == []


def test_running_out_of_memory_is_a_job_error_and_leaves_no_file(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(self: Predictor, batch: torch.Tensor, top_k: int) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Predictor, "predict_batch", out_of_memory)
    write_image(tmp_path / "flat" / "x.png", (1, 2, 3), (8, 8))
    job = make_job(tmp_path, model, str(tmp_path / "flat"))
    with pytest.raises(JobError, match="out of memory on cpu running resnet18 with batch_size 5"):
        run_inference(job, Recorder(), never)
    assert os.listdir(tmp_path / "out") == []


def test_a_model_with_broken_weights_is_a_job_error(tmp_path: Path) -> None:
    model = write_model(tmp_path / "nan.pt", broken=True)
    write_image(tmp_path / "flat" / "x.png", (1, 2, 3), (8, 8))
    with pytest.raises(JobError, match=r"not a number for x\.png"):
        run_inference(make_job(tmp_path, model, str(tmp_path / "flat")), Recorder(), never)


def test_a_corrupt_model_file_is_a_job_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"PK\x03\x04 half a zip file")
    with pytest.raises(JobError, match="cannot load model file"):
        run_inference(make_job(tmp_path, bad, SYNTHETIC), Recorder(), never)
    with pytest.raises(JobError, match="does not exist"):
        run_inference(make_job(tmp_path, tmp_path / "none.pt", SYNTHETIC), Recorder(), never)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"device": "tpu"}, "unknown device|not supported"),
        ({"dataset": "/no/such/folder"}, "dataset folder /no/such/folder does not exist"),
    ],
)
def test_what_a_user_can_fix_fails_as_a_job_error(
    tmp_path: Path, model: Path, changes: dict[str, object], message: str
) -> None:
    job = dataclasses.replace(make_job(tmp_path, model, SYNTHETIC), **changes)  # type: ignore[arg-type]
    with pytest.raises(JobError, match=message):
        run_inference(job, Recorder(), never)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_on_a_cpu_machine_says_so(tmp_path: Path, model: Path) -> None:
    with pytest.raises(JobError, match="no usable CUDA GPU"):
        run_inference(make_job(tmp_path, model, SYNTHETIC, device="cuda:0"), Recorder(), never)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: CUDA is unavailable here")
def test_a_gpu_run_records_its_peak_memory(tmp_path: Path, model: Path) -> None:
    result = run_inference(make_job(tmp_path, model, SYNTHETIC, device="cuda:0"), Recorder(), never)
    assert result.metrics["peak_memory_bytes"] > 0


# --- the submit-time check ------------------------------------------------------------


def layout(root: Path, kind: str) -> Path:
    """Folders of each shape `validate_inference_folder` must tell apart."""
    if kind == "image-folder":
        write_class_folders(root, per_class=1)
    elif kind == "flat":
        write_image(root / "a.png", (0, 0, 0), (4, 4))
        (root / ".DS_Store").write_text("")
        (root / ".thumbnails").mkdir()
    elif kind == "empty":
        root.mkdir()
        (root / "readme.txt").write_text("no images here")
    elif kind == "mixed":
        write_class_folders(root, per_class=1)
        write_image(root / "loose.png", (0, 0, 0), (4, 4))
    elif kind == "empty-class":
        write_class_folders(root, per_class=1)
        (root / "nothing").mkdir()
    elif kind == "file":
        root.write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("image-folder", None),
        ("flat", None),
        ("missing", "does not exist"),
        ("file", "is a file; expected a folder of images"),
        ("empty", "has no images"),
        ("mixed", "holds both images .* and sub-folders"),
        ("empty-class", "class folder 'nothing' .* has no images"),
    ],
)
def test_validate_inference_folder(tmp_path: Path, kind: str, problem: str | None) -> None:
    found = validate_inference_folder(str(layout(tmp_path / "data", kind)))
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert re.search(problem, found), found


# --- real data ------------------------------------------------------------------------


def test_a_model_trained_on_digits_recognises_digits_it_never_saw(
    tmp_path: Path, digits: Path, digits_model: JobResult
) -> None:
    # The session's digits run (tests/engines/conftest.py) never saw `held_out`.
    trained = digits_model
    job = make_job(
        tmp_path, Path(trained.model_path), str(digits / "held_out"), batch_size=64, top_k=3
    )
    result = run_inference(job, Recorder(), never)
    rows = read_rows(result.output_path)
    assert len(rows) == 360
    assert {row["label"] for row in rows} == {str(digit) for digit in range(10)}
    assert result.metrics["errors"] == 0
    assert result.metrics["accuracy"] >= 0.8
