"""Real, tiny training runs on the CPU: events, checkpoints, cancellation, failures, and a
convergence check on scikit-learn's handwritten digits."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision

from engines import artifacts, zoo
from engines.checkpoints import normalisation_path
from engines.datasets import IMAGENET_MEAN, IMAGENET_STD, load_dataset
from engines.jobs import (
    InitialWeights,
    JobCancelled,
    JobError,
    JobEvent,
    JobResult,
    TrainingJob,
)
from engines.training import checkpoint_path, model_path, train


def make_job(tmp_path: Path, **changes: object) -> TrainingJob:
    job = TrainingJob(
        task_id="t1",
        model="resnet18",
        dataset="synthetic",
        epochs=1,
        batch_size=16,
        learning_rate=1e-3,
        optimizer="adam",
        image_size=32,
        seed=0,
        val_split=0.25,
        device="cpu",
        output_dir=str(tmp_path / "out"),
        # One thread: with the cores shared (other tests, their workers), OpenMP threads
        # that wait on each other make a run many times slower, never faster.
        num_threads=1,
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


class Recorder:
    """An `emit` that keeps every event."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def __call__(self, event: JobEvent) -> None:
        self.events.append(event)

    def lines(self) -> list[str]:
        return [event.message for event in self.events]

    def progress(self) -> list[dict[str, float]]:
        return [e.metrics for e in self.events if "batch" in e.metrics]

    def epochs(self) -> list[dict[str, float]]:
        return [e.metrics for e in self.events if e.metrics and "batch" not in e.metrics]


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


def test_a_run_reports_checkpoints_and_leaves_a_usable_model(tmp_path: Path) -> None:
    job = make_job(tmp_path, epochs=2)
    emit = Recorder()

    result = train(job, emit, never)

    lines = emit.lines()
    assert lines[0].startswith("training resnet18 (11,")
    assert "cpu" in lines[0] and "4 classes" in lines[0]
    assert "saved checkpoint epoch 1" in lines and "saved checkpoint epoch 2" in lines
    # Every epoch reports its last batch, with progress running up to 1.
    progress = emit.progress()
    last_batches = [m for m in progress if m["batch"] == m["batches"]]
    assert [m["epoch"] for m in last_batches] == [1.0, 2.0]
    assert all(0 < m["progress"] <= 1 for m in progress)
    assert progress == sorted(progress, key=lambda m: m["progress"])
    epochs = emit.epochs()
    assert [m["epoch"] for m in epochs] == [1.0, 2.0]
    for metrics in epochs:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "images_per_sec"} <= set(metrics)
    assert epochs[-1]["progress"] == 1.0
    assert result.metrics == epochs[-1]
    assert "peak_memory_bytes" not in result.metrics

    assert result.model_path == model_path(job.output_dir)
    for epoch in (1, 2):
        checkpoint = artifacts.load_artifact(checkpoint_path(job.output_dir, epoch))
        assert checkpoint.epoch == epoch and checkpoint.optimizer_state is not None
    # The file is plain weights: torch's safe loader reads it without help.
    raw = torch.load(result.model_path, weights_only=True)
    assert raw["format"] == "tandem.model" and "optimizer_state" not in raw

    artifact = artifacts.load_artifact(result.model_path)
    assert artifact.classes == ("blue_stripes", "green_circle", "red_square", "yellow_cross")
    model = artifact.build_model()
    images = torch.stack([load_dataset("synthetic", 32, seed=0).dataset[i][0] for i in (0, 40)])
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()


def _googlenet_from_torchvision_weights(tmp_path: Path) -> tuple[Path, TrainingJob]:
    """A file in torchvision's googlenet layout (aux classifiers and all), as the hub cache
    holds, and a one-epoch job starting from it."""
    weights = tmp_path / "googlenet-1378be20.pth"
    model = torchvision.models.googlenet(
        weights=None, aux_logits=True, init_weights=True, num_classes=1000
    )
    torch.save(model.state_dict(), weights)
    source = InitialWeights("pretrained", str(weights), "torchvision googlenet IMAGENET1K_V1")
    job = make_job(tmp_path / "run", model="googlenet", initial_weights=source, val_split=0.0)
    return weights, job


def test_a_run_from_torchvisions_googlenet_weights_normalises_as_they_expect_to_the_end(
    tmp_path: Path,
) -> None:
    weights, job = _googlenet_from_torchvision_weights(tmp_path)
    emit = Recorder()

    first = train(job, emit, never)

    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for path in (first.model_path, checkpoint_path(job.output_dir, 1)):
        artifact = artifacts.load_artifact(path)
        assert (artifact.mean, artifact.std) == half
    (described,) = [line for line in emit.lines() if line.startswith("training googlenet")]
    assert described.endswith(
        "images normalised as the starting weights expect (mean/std per channel "
        "0.5/0.5, 0.5/0.5, 0.5/0.5)"
    )
    # Resumed for a second epoch after the file it started from is gone: the same.
    weights.unlink()
    resumed = dataclasses.replace(job, epochs=2, resume_from=checkpoint_path(job.output_dir, 1))
    second = train(resumed, Recorder(), never)
    assert second.metrics["epoch"] == 2
    for path in (second.model_path, checkpoint_path(job.output_dir, 2)):
        artifact = artifacts.load_artifact(path)
        assert (artifact.mean, artifact.std) == half


def test_a_run_resumed_from_before_normalisation_was_recorded_keeps_imagenets(
    tmp_path: Path,
) -> None:
    # Runs started before the record existed normalised with ImageNet's statistics, even
    # from googlenet's torchvision weights: such a run goes on as it began.
    _, job = _googlenet_from_torchvision_weights(tmp_path)
    train(job, Recorder(), never)
    os.remove(normalisation_path(job.output_dir))
    resumed = dataclasses.replace(job, epochs=2, resume_from=checkpoint_path(job.output_dir, 1))
    result = train(resumed, Recorder(), never)
    artifact = artifacts.load_artifact(result.model_path)
    assert (artifact.mean, artifact.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_the_same_seed_gives_the_same_run(tmp_path: Path) -> None:
    first = train(make_job(tmp_path / "a", model="mobilenet_v3_small"), Recorder(), never)
    second = train(make_job(tmp_path / "b", model="mobilenet_v3_small"), Recorder(), never)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert first.metrics[key] == second.metrics[key]


def test_without_a_validation_split_there_are_no_validation_metrics(tmp_path: Path) -> None:
    result = train(make_job(tmp_path, val_split=0.0, optimizer="sgd"), Recorder(), never)
    assert "val_loss" not in result.metrics and "val_accuracy" not in result.metrics
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_should_stop_cancels_at_a_batch_boundary(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    emit = Recorder()
    with pytest.raises(JobCancelled, match="batch 3"):
        train(job, emit, stop_after(3))
    assert not emit.epochs()
    assert not Path(model_path(job.output_dir)).exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "/nonexistent/dataset"}, "does not exist"),
        ({"model": "resnet19"}, "did you mean resnet18"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'; choose one of adam, adamw"),
        ({"model": "vit_b_16", "image_size": 40}, "multiple of its 16 px patches"),
        ({"model": "alexnet", "image_size": 32}, "model alexnet cannot take 32 px images: "),
        ({"val_split": 1.5}, "val_split must be at least 0 and below 1"),
        ({"epochs": 0}, "epochs must be at least 1"),
    ],
)
def test_what_a_user_can_fix_fails_as_a_job_error(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(JobError, match=message):
        train(make_job(tmp_path, **changes), Recorder(), never)


def test_a_diverging_run_says_so(tmp_path: Path) -> None:
    job = make_job(tmp_path, optimizer="sgd", learning_rate=1e10, val_split=0.0)
    with pytest.raises(
        JobError, match=r"training diverged: the loss is (nan|inf) .* lower learning_rate"
    ):
        train(job, Recorder(), never)


class OutOfMemory(torch.nn.Module):
    """A model whose forward pass fails the way a too-large batch does on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_running_out_of_memory_is_a_job_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo, "build_model", lambda name, classes, size: OutOfMemory())
    with pytest.raises(JobError, match="out of memory on cpu training resnet18 with batch_size 16"):
        train(make_job(tmp_path), Recorder(), never)


def test_a_folder_without_classes_is_a_job_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "loose.png").write_bytes(b"")
    with pytest.raises(JobError, match="has no class sub-folders"):
        train(make_job(tmp_path, dataset=str(tmp_path / "images")), Recorder(), never)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_on_a_cpu_machine_says_so(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="no usable CUDA GPU"):
        train(make_job(tmp_path, device="cuda:0"), Recorder(), never)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: CUDA is unavailable here")
def test_a_gpu_run_records_its_peak_memory(tmp_path: Path) -> None:
    result = train(make_job(tmp_path, device="cuda:0"), Recorder(), never)
    assert result.metrics["peak_memory_bytes"] > 0
    assert artifacts.load_artifact(result.model_path).state_dict["fc.weight"].device.type == "cpu"


def test_resnet18_learns_handwritten_digits(digits_model: JobResult) -> None:
    # The session's digits run (tests/engines/conftest.py): chance is 0.1.
    result = digits_model
    assert result.metrics["val_accuracy"] >= 0.8
    artifact = artifacts.load_artifact(result.model_path)
    assert artifact.classes == tuple(str(digit) for digit in range(10))
