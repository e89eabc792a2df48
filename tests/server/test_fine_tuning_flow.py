"""Where a training's weights start (an earlier task's model, torchvision's weights from
the hub cache, a plain state dict) and the recipe around it, through the real gRPC
server and real workers: what Train accepts and refuses, what GetTask shows, what the
task's log says, and what ends up in the model file."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
import torchvision
from PIL import Image

from engines.artifacts import load_artifact
from engines.pretrained import resolve
from tandem.v1 import (
    inference_service_pb2,
    resource_service_pb2,
    resources_pb2,
    task_pb2,
    task_service_pb2,
)
from tests.conftest import Stubs, make_config, no_gpus
from tests.harness.threaded import ServerThread

SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
# Small enough to train in seconds on two cores, large enough for resnet18's strides.
SIZE = 16


def write_digits(root: Path, labels: range, *, per_class: int | None = None) -> Path:
    """scikit-learn's handwritten digits of `labels` as an ImageFolder at `root`."""
    from sklearn.datasets import load_digits

    data = load_digits()
    counts = dict.fromkeys(labels, 0)
    for index, (pixels, label) in enumerate(zip(data.images, data.target, strict=True)):
        if label not in counts or (per_class is not None and counts[label] >= per_class):
            continue
        counts[label] += 1
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * (255 / 16)).astype("uint8")).save(folder / f"{index}.png")
    return root


def messages(stubs: Stubs, task_id: str) -> list[str]:
    """The task's log lines, once it has ended (the last event is its state)."""
    events = stubs.events(task_id)
    assert events[-1].state == SUCCEEDED, [e.message for e in events][-5:]
    return [e.message for e in events]


def refused(stubs: Stubs, **fields: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stubs.train(**fields)
    return info.value


def task_count(stubs: Stubs) -> int:
    return int(stubs.tasks.ListTasks(task_service_pb2.ListTasksRequest()).total_size)


@pytest.fixture(scope="module")
def digits(shared_server: ServerThread) -> str:
    """Digits 0-2, 40 of each, under the shared server's dataset root (relative name)."""
    write_digits(shared_server.config.dataset_roots[0] / "ft_digits_012", range(3), per_class=40)
    return "ft_digits_012"


@pytest.fixture(scope="module")
def source(shared_server: ServerThread, stubs: Stubs) -> task_pb2.Task:
    """A SUCCEEDED resnet18 trained at 16 px on digits 3-5: other classes than `digits`."""
    write_digits(shared_server.config.dataset_roots[0] / "ft_digits_345", range(3, 6), per_class=40)
    task = stubs.train(model="resnet18", dataset="ft_digits_345", image_size=SIZE, batch_size=32)
    messages(stubs, task.task_id)
    done: task_pb2.Task = stubs.get(task.task_id)
    return done


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stubs]:
    """A server that admits no training on the CPU: every accepted training stays QUEUED."""
    config = make_config(tmp_path_factory.mktemp("held"), prewarm_workers=0)
    server = ServerThread(config, no_gpus()).start()
    stubs = Stubs.connect(server.port)
    stubs.resources.UpdateLimits(
        resource_service_pb2.UpdateLimitsRequest(
            max_concurrent={"cpu": resources_pb2.ConcurrencyLimits(training=0, inference=4)}
        )
    )
    yield stubs
    stubs.channel.close()
    server.stop()


# -- init_from --------------------------------------------------------------------------


def test_init_from_a_succeeded_task_takes_its_model_and_replaces_the_head(
    stubs: Stubs, source: task_pb2.Task, digits: str
) -> None:
    task = stubs.train(init_from=source.task_id, model="", image_size=None, dataset=digits)
    assert task.training.model == "resnet18" == source.training.model
    assert task.training.image_size == SIZE == source.training.image_size
    assert task.training.init_from == source.task_id
    log = messages(stubs, task.task_id)
    started = [line for line in log if line.startswith("started from")]
    assert len(started) == 1, log
    assert started[0].startswith(f"started from task {source.task_id}'s model: loaded ")
    # digits 0-2 are not the source's 3-5: a new head, sized to the new classes.
    assert started[0].endswith("; new (sized to 3 classes): fc.weight, fc.bias"), started[0]
    assert stubs.get(task.task_id).state == SUCCEEDED


def test_init_from_refusals(stubs: Stubs, source: task_pb2.Task) -> None:
    missing = refused(stubs, init_from="no-such-task", model="")
    assert missing.code() == grpc.StatusCode.NOT_FOUND, missing.details()

    other = refused(stubs, init_from=source.task_id, model="mobilenet_v3_small")
    assert other.code() == grpc.StatusCode.INVALID_ARGUMENT, other.details()
    assert "resnet18" in other.details() and "mobilenet_v3_small" in other.details()

    for outside in ({"init_from": "/etc/passwd"}, {"weights_path": "/etc/passwd"}):
        denied = refused(stubs, model="resnet18", **outside)
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, (outside, denied.details())

    pairs = [
        {"init_from": source.task_id, "pretrained": "DEFAULT"},
        {"pretrained": "DEFAULT", "weights_path": "w.pth"},
        {"init_from": source.task_id, "weights_path": "w.pth"},
    ]
    for pair in pairs:
        both = refused(stubs, model="resnet18", **pair)
        assert both.code() == grpc.StatusCode.INVALID_ARGUMENT, (pair, both.details())
        assert all(name in both.details() for name in pair), both.details()


def test_init_from_a_task_that_has_not_succeeded_is_refused(held: Stubs) -> None:
    waiting = held.train()
    try:
        assert held.get(waiting.task_id).state == task_pb2.TASK_STATE_QUEUED
        error = refused(held, init_from=waiting.task_id, model="")
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert waiting.task_id in error.details() and "QUEUED" in error.details()
    finally:
        held.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=waiting.task_id))


# -- pretrained -------------------------------------------------------------------------


def test_pretrained_weights_come_from_the_hub_cache_only(
    stubs: Stubs, digits: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = resolve("resnet18", "DEFAULT")
    checkpoints = tmp_path / "hub" / "checkpoints"
    before = task_count(stubs)
    fields = {"model": "resnet18", "pretrained": "DEFAULT", "dataset": digits, "image_size": SIZE}

    error = refused(stubs, **fields)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    for words in (weights.file_name, str(checkpoints), weights.url):
        assert words in error.details(), (words, error.details())
    assert task_count(stubs) == before

    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), checkpoints / weights.file_name)
    task = stubs.train(**fields)
    assert task.training.pretrained == "IMAGENET1K_V1"
    log = messages(stubs, task.task_id)
    started = [line for line in log if line.startswith("started from")]
    assert len(started) == 1, log
    assert started[0].startswith("started from torchvision resnet18 IMAGENET1K_V1 weights")
    assert started[0].endswith("new (sized to 3 classes): fc.weight, fc.bias"), started[0]


# -- weights_path -----------------------------------------------------------------------


def test_a_fully_frozen_fine_tune_changes_nothing_but_the_head(
    shared_server: ServerThread, stubs: Stubs, digits: str
) -> None:
    torch.manual_seed(1234)  # weights no fresh model of the task's seed has
    original = torchvision.models.resnet18().state_dict()
    # Distinct batch-norm statistics too, so a layer that kept learning them shows.
    for name, tensor in original.items():
        if name.endswith(("running_mean", "running_var")):
            tensor.uniform_(0.5, 1.5)
    (shared_server.config.data_dir / "weights").mkdir(exist_ok=True)
    path = shared_server.config.data_dir / "weights" / "resnet18_1000.pth"
    torch.save(original, path)

    task = stubs.train(
        model="resnet18",
        dataset=digits,
        image_size=SIZE,
        weights_path="weights/resnet18_1000.pth",  # relative: under the first model root
        epochs=1,
        freeze_epochs=1,
    )
    assert task.training.weights_path == str(path)
    assert task.training.freeze_epochs == 1
    log = messages(stubs, task.task_id)
    assert any(line.startswith(f"started from weights file {path}") for line in log), log
    assert "epoch 1 trains only the classifier head (fc.bias, fc.weight)" in "\n".join(log)

    tuned = load_artifact(stubs.get(task.task_id).model_path).state_dict
    assert tuned["fc.weight"].shape == (3, 512) and tuned["fc.bias"].shape == (3,)
    body = [name for name in original if not name.startswith("fc.")]
    assert set(body) == {name for name in tuned if not name.startswith("fc.")}
    changed = [name for name in body if not torch.equal(tuned[name], original[name])]
    assert changed == [], f"frozen tensors that changed: {changed}"


# -- the recipe ---------------------------------------------------------------------------


def test_bf16_digits_learned_end_to_end(shared_server: ServerThread, stubs: Stubs) -> None:
    """Digits in bf16 autocast on the CPU, scored through Infer on a held-out fifth."""
    from sklearn.datasets import load_digits

    root = shared_server.config.dataset_roots[0] / "ft_digits_all"
    data = load_digits()
    for index, (pixels, label) in enumerate(zip(data.images, data.target, strict=True)):
        folder = root / ("held_out" if index % 5 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * (255 / 16)).astype("uint8")).save(folder / f"{index}.png")
    trained = stubs.train(
        model="resnet18",
        dataset="ft_digits_all/train",
        image_size=SIZE,
        epochs=3,
        batch_size=32,
        learning_rate=1e-3,
        lr_schedule="constant",
        precision="bf16",
    )
    assert trained.training.precision == "bf16"
    log = messages(stubs, trained.task_id)
    assert any(line.startswith("recipe: ") and "precision bf16" in line for line in log), log
    scored = stubs.inference.Infer(
        inference_service_pb2.InferRequest(
            task_id=trained.task_id, dataset="ft_digits_all/held_out", device="cpu"
        ),
        timeout=30,
    ).task
    assert stubs.events(scored.task_id)[-1].state == SUCCEEDED
    result = stubs.get(scored.task_id)
    assert result.metrics["images"] == 360
    accuracy = result.metrics["accuracy"]
    assert accuracy >= 0.8, f"held-out accuracy {accuracy:.3f} after 3 bf16 epochs"


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"augment": "heavy"}, "augment"),
    ({"lr_schedule": "linear"}, "lr_schedule"),
    ({"precision": "fp8"}, "precision"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"weight_decay": 2.0}, "weight_decay"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"label_smoothing": math.nan}, "label_smoothing"),
    ({"epochs": 2, "warmup_epochs": 2}, "warmup_epochs"),
    ({"epochs": 2, "freeze_epochs": 3}, "freeze_epochs"),
    ({"epochs": 2, "freeze_epochs": 1}, "freeze_epochs"),  # no weights to start from
    ({"early_stopping_patience": -1}, "early_stopping_patience"),
    ({"early_stopping_patience": 2, "val_split": 0.0}, "early_stopping_patience"),
    ({"model": "resnet18", "pretrained": "NOPE"}, "pretrained"),
]


@pytest.mark.parametrize(
    ("fields", "field"),
    BAD_VALUES,
    ids=[",".join(f"{k}={v}" for k, v in fields.items()) for fields, _ in BAD_VALUES],
)
def test_every_recipe_field_refuses_bad_values(
    held: Stubs, fields: dict[str, Any], field: str
) -> None:
    before = task_count(held)
    error = refused(held, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field in error.details(), error.details()
    assert task_count(held) == before


def test_a_plain_submit_shows_the_recipe_defaults(held: Stubs) -> None:
    adam = held.train()
    adamw = held.train(optimizer="adamw")
    try:
        for task in (adam, adamw):
            shown = held.get(task.task_id).training
            assert shown.augment == "none"
            assert shown.lr_schedule == "cosine"
            assert shown.label_smoothing == pytest.approx(0.1)
            assert shown.precision == "auto"
            assert shown.freeze_epochs == 0
            assert shown.warmup_epochs == 0
            assert shown.early_stopping_patience == 0
            assert (shown.init_from, shown.pretrained, shown.weights_path) == ("", "", "")
        assert held.get(adam.task_id).training.weight_decay == 0.0
        assert held.get(adamw.task_id).training.weight_decay == pytest.approx(0.01)
    finally:
        for task in (adam, adamw):
            held.tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.task_id))
