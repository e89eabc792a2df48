"""How a training normalises its images: what its starting weights learned with, and
torchvision's googlenet and inception_v3 weights, which learned with other numbers than
ImageNet's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torchvision

from engines import catalogue
from engines.artifacts import save_artifact
from engines.checkpoints import normalisation_path
from engines.datasets import IMAGENET_MEAN, IMAGENET_STD
from engines.jobs import InitialWeights, JobError, TrainingJob
from engines.normalisation import input_normalisation, run_normalisation
from engines.zoo import build_model


def _artifact(path: Path, architecture: str, classes: list[str]) -> Path:
    save_artifact(
        str(path),
        model=build_model(architecture, len(classes), 32),
        architecture=architecture,
        classes=classes,
        image_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        epoch=2,
        metrics={"val_accuracy": 0.5},
    )
    return path


@pytest.mark.parametrize(("name", "size"), [("googlenet", 64), ("inception_v3", 80)])
def test_torchvisions_googlenet_and_inception_weights_see_the_tensors_they_learned_on(
    name: str, size: int
) -> None:
    # torchvision loads these weights into a model that converts ImageNet-normalised input
    # (`transform_input`); Tandem's model has no conversion and normalises with 0.5/0.5.
    # The same weights must see the same tensors either way.
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(
        name, weights=None, num_classes=7, aux_logits=False, init_weights=True, transform_input=True
    ).eval()
    ours = build_model(name, 7, size).eval()
    ours.load_state_dict(theirs.state_dict())
    raw = torch.rand(2, 3, size, size)

    def normalised(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
        return (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    mean, std = catalogue.TORCHVISION_WEIGHTS_NORMALISATION[name]
    with torch.no_grad():
        expected = theirs(normalised(IMAGENET_MEAN, IMAGENET_STD))
        got = ours(normalised(mean, std))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_training_normalises_as_its_starting_weights_learned(tmp_path: Path) -> None:
    imagenet = (IMAGENET_MEAN, IMAGENET_STD)
    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    artifact = _artifact(tmp_path / "model.pt", "resnet18", ["a", "b"])  # 0.5 / 0.25

    def pretrained(model: str) -> InitialWeights:
        return InitialWeights("pretrained", str(tmp_path / f"{model}.pth"), f"torchvision {model}")

    assert input_normalisation("resnet18", None) == imagenet
    assert input_normalisation("googlenet", None) == imagenet
    assert input_normalisation("googlenet", pretrained("googlenet")) == half
    assert input_normalisation("inception_v3", pretrained("inception_v3")) == half
    assert input_normalisation("resnet18", pretrained("resnet18")) == imagenet
    # A plain state dict says nothing of how it was trained.
    plain = InitialWeights("state_dict", str(tmp_path / "sd.pt"), "a plain state dict")
    assert input_normalisation("googlenet", plain) == imagenet
    # An artifact says: its own, for the architecture it is.
    from_artifact = InitialWeights("artifact", str(artifact), "task t0's model")
    assert input_normalisation("resnet18", from_artifact) == ((0.5,) * 3, (0.25,) * 3)
    # Not for another one (loading it fails, and says why), nor when it cannot be read.
    assert input_normalisation("googlenet", from_artifact) == imagenet
    missing = InitialWeights("artifact", str(tmp_path / "gone.pt"), "task t9's model")
    assert input_normalisation("resnet18", missing) == imagenet


def _job(output_dir: Path, **changes: object) -> TrainingJob:
    job = TrainingJob(
        task_id="t1",
        model="resnet18",
        dataset="synthetic",
        epochs=1,
        batch_size=16,
        learning_rate=1e-3,
        optimizer="sgd",
        image_size=32,
        seed=0,
        val_split=0.0,
        device="cpu",
        output_dir=str(output_dir),
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def test_a_fresh_run_records_its_choice_and_a_resumed_one_reads_it_back(tmp_path: Path) -> None:
    weights = InitialWeights("pretrained", str(tmp_path / "g.pth"), "torchvision googlenet")
    fresh = _job(tmp_path / "out", model="googlenet", initial_weights=weights)
    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert run_normalisation(fresh) == half
    assert json.loads(Path(normalisation_path(fresh.output_dir)).read_text()) == {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
    }
    # Resumed, it reads the record, not its starting weights (here: none at all).
    resumed = _job(tmp_path / "out", model="googlenet", resume_from="checkpoint.pt")
    assert run_normalisation(resumed) == half


def test_a_record_that_cannot_be_written_or_read_fails_the_job_with_a_sentence(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(JobError, match="cannot record how this run normalises its images"):
        run_normalisation(_job(tmp_path / "a-file" / "out"))
    damaged = _job(tmp_path / "out", resume_from="checkpoint.pt")
    Path(normalisation_path(damaged.output_dir)).parent.mkdir(parents=True)
    Path(normalisation_path(damaged.output_dir)).write_text('{"mean": [0.5, 0.5]}')
    with pytest.raises(JobError, match="cannot read how this run normalises its images"):
        run_normalisation(damaged)
