"""The training recipe, in the engine: fine-tuning that helps, a frozen backbone that
stays frozen, bf16 on the CPU that learns, augmentation that is reproducible image by
image, the learning-rate schedules, and the epoch kept being the best one."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import torch
import torchvision

from engines import artifacts, recipe
from engines.augment import AugmentedSet, pipeline
from engines.checkpoints import checkpoint_path
from engines.datasets import IMAGENET_MEAN, IMAGENET_STD, load_dataset
from engines.jobs import InitialWeights, JobResult, TrainingJob
from engines.training import train
from tests.engines.test_training import Recorder, make_job, never


def _subset(source: Path, target: Path, labels: range) -> Path:
    """An ImageFolder of `source`'s classes in `labels`, linked rather than copied."""
    target.mkdir(parents=True, exist_ok=True)
    for label in labels:
        (target / str(label)).symlink_to(source / str(label), target_is_directory=True)
    return target


def held_out_accuracy(result: JobResult, folder: Path) -> float:
    """The model file's top-1 accuracy on every image of `folder`."""
    artifact = artifacts.load_artifact(result.model_path)
    model = artifact.build_model()
    dataset = load_dataset(str(folder), artifact.image_size, seed=0).dataset
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # type: ignore[arg-type]
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])  # type: ignore[arg-type]
    with torch.no_grad():
        return float((model(images).argmax(dim=1) == labels).float().mean())


def digits_job(dataset: Path, output: Path, **changes: object) -> TrainingJob:
    job = TrainingJob(
        task_id="digits",
        model="resnet18",
        dataset=str(dataset),
        epochs=1,
        batch_size=64,
        learning_rate=3e-4,
        optimizer="adam",
        image_size=16,
        seed=0,
        val_split=0.2,
        device="cpu",
        output_dir=str(output),
        num_threads=1,
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def test_fine_tuning_from_digits_0_4_beats_random_init_on_5_9_after_one_epoch(
    digits: Path, tmp_path: Path
) -> None:
    first = _subset(digits / "train", tmp_path / "first", range(0, 5))
    second = _subset(digits / "train", tmp_path / "second", range(5, 10))
    second_held_out = _subset(digits / "held_out", tmp_path / "second_held_out", range(5, 10))
    base = train(
        digits_job(first, tmp_path / "base", epochs=2, learning_rate=1e-3), Recorder(), never
    )

    # The same recipe twice, one epoch of 5-9: from random weights, and from the 0-4 model.
    scratch = train(digits_job(second, tmp_path / "scratch"), Recorder(), never)
    events = Recorder()
    source = InitialWeights("artifact", base.model_path, "the 0-4 model")
    tuned = train(digits_job(second, tmp_path / "tuned", initial_weights=source), events, never)

    # Other classes (5-9, not 0-4), as many of them: the head is new, the rest loaded.
    loaded = "started from the 0-4 model: loaded 120 of 122 tensors; "
    assert f"{loaded}new (sized to 5 classes): fc.weight, fc.bias" in events.lines()
    from_scratch = held_out_accuracy(scratch, second_held_out)
    fine_tuned = held_out_accuracy(tuned, second_held_out)
    # Seeds 0-2 measured 0.38-0.48 from scratch and 0.68-0.84 fine-tuned.
    assert fine_tuned >= from_scratch + 0.2, (
        f"held-out accuracy on 5-9 after one epoch: fine-tuned {fine_tuned:.3f}, "
        f"from random weights {from_scratch:.3f}"
    )


def test_a_frozen_backbone_keeps_every_tensor_of_a_torchvision_state_dict(
    digits: Path, tmp_path: Path
) -> None:
    """A 1,000-class resnet18 in torchvision's layout, fine-tuned on 3 classes with every
    epoch frozen: the head is new and every other tensor (batch-norm statistics too)
    ends equal to the file's."""
    weights = tmp_path / "resnet18-imagenet-layout.pth"
    torch.manual_seed(7)
    original = torchvision.models.resnet18().state_dict()
    torch.save(original, weights)
    three = _subset(digits / "train", tmp_path / "three", range(0, 3))
    events = Recorder()
    source = InitialWeights("state_dict", str(weights), f"weights file {weights.name}")
    job = digits_job(three, tmp_path / "out", epochs=2, freeze_epochs=2, initial_weights=source)

    result = train(job, events, never)

    assert any(
        line.startswith("epochs 1-2 train only the classifier head (fc.bias, fc.weight)")
        for line in events.lines()
    )
    tuned = artifacts.load_artifact(result.model_path).state_dict
    assert tuned["fc.weight"].shape == (3, 512)
    for name, tensor in original.items():
        if not name.startswith("fc."):
            assert torch.equal(tuned[name], tensor), name


def test_bf16_on_the_cpu_learns_the_digits(digits: Path, tmp_path: Path) -> None:
    job = digits_job(
        digits / "train",
        tmp_path / "bf16",
        epochs=3,
        batch_size=32,
        learning_rate=1e-3,
        precision="bf16",
    )
    events = Recorder()
    result = train(job, events, never)
    assert any("precision bf16" in line for line in events.lines())
    accuracy = held_out_accuracy(result, digits / "held_out")
    # Learned: five times chance (ten classes). Not a finer figure: bf16 on the CPU runs
    # different kernels (AMX, AVX-512) by machine and by what ran before in the process,
    # so its path is not the same everywhere; 0.62 was seen once in a full suite run
    # here, 0.8 and more alone.
    assert accuracy >= 0.5, f"held-out accuracy in bf16: {accuracy:.3f}"
    # Ten classes: top-5 is reported beside top-1, and can only be higher.
    final = result.metrics
    assert final["val_top5_accuracy"] >= final["val_accuracy"]


def test_the_model_kept_is_the_epoch_with_the_best_validation_accuracy(tmp_path: Path) -> None:
    events = Recorder()
    job = make_job(tmp_path, epochs=3, lr_schedule="cosine", label_smoothing=0.1)
    result = train(job, events, never)
    epochs = events.epochs()
    accuracies = [m["val_accuracy"] for m in epochs]
    best = int(result.metrics["best_epoch"])
    assert accuracies[best - 1] == max(accuracies)
    assert best == 1 + min(
        range(3), key=lambda i: (-accuracies[i], epochs[i]["val_loss"])
    )  # ties go to the lower validation loss
    kept = artifacts.load_artifact(result.model_path)
    at_best = artifacts.load_artifact(checkpoint_path(job.output_dir, best))
    assert kept.epoch == best
    for name, tensor in at_best.state_dict.items():
        assert torch.equal(kept.state_dict[name], tensor), name
    # The last epoch is still there, in the checkpoints.
    assert artifacts.load_artifact(checkpoint_path(job.output_dir, 3)).epoch == 3


def test_early_stopping_stops_after_patience_epochs_without_a_better_val_loss(
    tmp_path: Path,
) -> None:
    # mobilenet_v3_small at 32 px on the synthetic set: its validation loss stops
    # improving after the first epoch (batch norm on few images), so it must stop at 2.
    job = make_job(
        tmp_path,
        model="mobilenet_v3_small",
        epochs=5,
        early_stopping_patience=1,
        lr_schedule="constant",
        label_smoothing=0.0,
    )
    events = Recorder()
    result = train(job, events, never)
    losses = [m["val_loss"] for m in events.epochs()]
    best_so_far = [min(losses[: i + 1]) for i in range(len(losses))]
    stalls = [i for i in range(1, len(losses)) if losses[i] >= best_so_far[i - 1]]
    assert stalls, f"the precondition failed: validation losses {losses} kept improving"
    assert len(losses) == stalls[0] + 1 < 5
    assert result.metrics["stopped_early_at_epoch"] == len(losses)
    assert any(
        line.startswith(f"stopping early after epoch {len(losses)}") for line in events.lines()
    )
    # The model kept is an earlier epoch than the last: its weights, not the last's.
    best = int(result.metrics["best_epoch"])
    assert best < len(losses), f"the precondition failed: the last epoch was the best ({losses})"
    kept = artifacts.load_artifact(result.model_path)
    at_best = artifacts.load_artifact(checkpoint_path(job.output_dir, best))
    at_last = artifacts.load_artifact(checkpoint_path(job.output_dir, len(losses)))
    assert kept.epoch == best
    assert all(torch.equal(kept.state_dict[k], t) for k, t in at_best.state_dict.items())
    assert not all(torch.equal(kept.state_dict[k], t) for k, t in at_last.state_dict.items())
    # Recovered after a crash from its last checkpoint, it stays stopped.
    last = checkpoint_path(job.output_dir, len(losses))
    again = Recorder()
    recovered = train(dataclasses.replace(job, resume_from=last), again, never)
    assert again.epochs() == []
    assert recovered.metrics["best_epoch"] == result.metrics["best_epoch"]


def test_augmentation_is_the_same_for_an_image_and_epoch_and_leaves_torchs_generator_alone() -> (
    None
):
    base = load_dataset("synthetic", 32, seed=0).dataset
    transform = pipeline("strong", 32)
    assert transform is not None and pipeline("none", 32) is None
    augmented = AugmentedSet(base, transform, seed=0, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first, label = augmented[(1, 5)]
    assert torch.equal(torch.get_rng_state(), before)
    assert label == base[5][1]
    assert torch.equal(augmented[(1, 5)][0], first)  # the same image and epoch: the same draws
    assert not torch.equal(augmented[(2, 5)][0], first)  # another epoch: other draws
    assert not torch.equal(base[5][0], first)
    assert first.shape == base[5][0].shape


def test_learning_rate_schedules() -> None:
    job = make_job(Path("."), epochs=4, lr_schedule="cosine", warmup_epochs=1)
    per_epoch = 10
    factors = [recipe.lr_factor(job, step, per_epoch) for step in range(40)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warm-up
    assert factors[10] == 1.0
    assert all(a > b for a, b in itertools.pairwise(factors[10:]))  # cosine only falls
    assert factors[25] == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 30)))
    step = dataclasses.replace(job, lr_schedule="step", epochs=6, warmup_epochs=0)
    assert [recipe.lr_factor(step, e * per_epoch, per_epoch) for e in range(6)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    constant = dataclasses.replace(job, lr_schedule="constant", warmup_epochs=0)
    assert {recipe.lr_factor(constant, s, per_epoch) for s in range(40)} == {1.0}


def test_weight_decay_spares_biases_and_norm_scales() -> None:
    model = torchvision.models.resnet18(num_classes=3)
    job = make_job(Path("."), optimizer="adamw", weight_decay=0.05)
    optimizer = recipe.build_optimizer(job, model)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_auto_precision_is_fp32_on_the_cpu_and_fp16_needs_a_scaler() -> None:
    cpu = torch.device("cpu")
    assert recipe.resolve_precision("auto", cpu).dtype is None
    assert recipe.resolve_precision("bf16", cpu).dtype is torch.bfloat16
    fp16 = recipe.resolve_precision("fp16", cpu)
    assert fp16.scaled and fp16.scaler(cpu) is not None
    assert not recipe.resolve_precision("bf16", cpu).scaled


def test_only_bf16_on_the_cpu_checks_its_gradients_before_a_step() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    checks = {
        name: recipe.resolve_precision(name, cpu).checks_gradients(cpu) for name in _PRECISIONS
    }
    assert checks == {"fp32": False, "bf16": True, "fp16": False}  # fp16's scaler checks
    assert not recipe.resolve_precision("bf16", gpu).checks_gradients(gpu)


_PRECISIONS = ("fp32", "bf16", "fp16")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_gradient_anywhere_is_seen(bad: float) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert recipe.gradients_finite(model)  # no gradients yet
    model(torch.ones(2, 3)).sum().backward()
    assert recipe.gradients_finite(model)
    model[0].bias.grad[1] = bad  # type: ignore[index]
    assert not recipe.gradients_finite(model)


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp16"), ((8, 0), "bf16")])
def test_auto_precision_on_a_gpu_follows_its_compute_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: str
) -> None:
    """At the CUDA boundary: a T4 (7.5) would only emulate bf16, so `auto` takes fp16 with
    a scaler there; an A100 or later (8.0+) computes in bf16."""
    asked: list[torch.device] = []

    def get_device_capability(device: torch.device) -> tuple[int, int]:
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    gpu = torch.device("cuda", 1)
    precision = recipe.resolve_precision("auto", gpu)
    assert precision.name == expected and precision.scaled == (expected == "fp16")
    assert asked == [gpu]  # the job's own GPU, not the current one
