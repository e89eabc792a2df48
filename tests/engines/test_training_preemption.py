"""A training preempted in the middle of an epoch and resumed ends exactly where an
uninterrupted run with the same seed and thread count ends: the same weights (to 1e-6)
and the same per-epoch metrics. mobilenet_v3_small has dropout, so its generator's state
must come back too; `sgd` has momentum, so the optimizer's state must."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from engines import artifacts
from engines.checkpoints import resume_point_path
from engines.jobs import JobPreempted, JobResult
from engines.training import train
from engines.training_state import EpochBatches, load
from tests.engines.test_training import Recorder, make_job, never

EXACT_METRICS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


def yield_at(calls: int) -> Callable[[], bool]:
    """A `should_yield` that turns true on its `calls`-th call (before that batch)."""
    seen = 0

    def should_yield() -> bool:
        nonlocal seen
        seen += 1
        return seen == calls

    return should_yield


def _weights(result: JobResult) -> dict[str, torch.Tensor]:
    return dict(artifacts.load_artifact(result.model_path, map_location="cpu").state_dict)


def _epoch_metrics(recorder: Recorder) -> list[dict[str, float]]:
    return [{k: m[k] for k in EXACT_METRICS} for m in recorder.epochs()]


# The whole recipe: per-image augmentation draws, a schedule by step, a frozen
# backbone in epoch 1, label smoothing, decoupled weight decay and bf16 autocast.
FULL_RECIPE = {
    "augment": "strong",
    "lr_schedule": "cosine",
    "warmup_epochs": 1,
    "label_smoothing": 0.1,
    "weight_decay": 0.01,
    "freeze_epochs": 1,
    "precision": "bf16",
}


@pytest.mark.parametrize("yield_before_batch", [4, 6 + 3])  # epoch 1's 4th; epoch 2's 3rd
@pytest.mark.parametrize("recipe", [{}, FULL_RECIPE], ids=["plain", "full-recipe"])
def test_a_run_preempted_mid_epoch_and_resumed_equals_an_uninterrupted_one(
    tmp_path: Path, yield_before_batch: int, recipe: dict[str, object]
) -> None:
    job = make_job(
        tmp_path / "whole",
        model="mobilenet_v3_small",
        epochs=3,
        optimizer="sgd",
        batch_size=16,
        **recipe,
    )
    whole_events = Recorder()
    whole = train(job, whole_events, never)
    batches = int(whole_events.progress()[0]["batches"])
    assert batches == 6  # 96 training images of the synthetic set's 128, 16 a batch

    split = dataclasses.replace(job, output_dir=str(tmp_path / "split"))
    first_events = Recorder()
    with pytest.raises(JobPreempted) as preempted:
        train(split, first_events, never, yield_at(yield_before_batch))
    where = preempted.value.preemption
    expected_epoch, expected_done = divmod(yield_before_batch - 1, batches)
    assert (where.epoch, where.batches_done) == (expected_epoch + 1, expected_done)
    assert where.checkpoint == resume_point_path(split.output_dir)
    assert load(where.checkpoint).batches_done == where.batches_done

    second_events = Recorder()
    resumed = train(dataclasses.replace(split, resume_from=where.checkpoint), second_events, never)
    assert any(
        line.startswith(f"resumed at epoch {where.epoch} after batch {where.batches_done}")
        for line in second_events.lines()
    )
    # It starts after the batches it had run (progress events are throttled, so the
    # equal metrics and weights below are what show each later batch ran once).
    ran = [(int(p["epoch"]), int(p["batch"])) for p in second_events.progress()]
    assert ran[0] > (where.epoch, where.batches_done)
    assert _epoch_metrics(first_events) + _epoch_metrics(second_events) == _epoch_metrics(
        whole_events
    )
    expected, got = _weights(whole), _weights(resumed)
    assert expected.keys() == got.keys()
    worst = max(float((expected[k].double() - got[k].double()).abs().max()) for k in expected)
    assert worst <= 1e-6


def test_an_epochs_order_depends_on_the_seed_and_the_epoch_only() -> None:
    order = EpochBatches(size=10, batch_size=4, seed=3, drop_last=False)
    order.set_epoch(2)
    epoch_two = list(order)
    order.set_epoch(1)
    epoch_one = list(order)
    assert epoch_one != epoch_two
    order.set_epoch(2, start=1)
    assert list(order) == epoch_two[1:]  # resumed at its second batch: the rest, no more
    assert sorted(i for batch in epoch_two for i in batch) == list(range(10))
    assert [len(b) for b in epoch_two] == [4, 4, 2]
    dropping = EpochBatches(size=9, batch_size=4, seed=3, drop_last=True)
    assert dropping.batches == len(dropping) == 2


def test_a_file_that_is_not_a_resume_point_is_refused(tmp_path: Path) -> None:
    job = make_job(tmp_path, model="mobilenet_v3_small", epochs=1)
    result = train(job, Recorder(), never)
    with pytest.raises(ValueError, match="is not a training resume point"):
        load(result.model_path)
