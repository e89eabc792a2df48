"""How a training normalises its images: chosen from its starting weights, recorded in
its output folder, and read back when it resumes.

ImageNet's mean and std unless the starting weights learned with others: torchvision's
googlenet and inception_v3 weights (`catalogue.TORCHVISION_WEIGHTS_NORMALISATION`), or an
earlier task's model, whose artifact records its own. The artifact a training writes
records the pair in turn, for batch inference, Predict and export.
"""

from __future__ import annotations

import json
import os
from typing import Any

from engines.artifact_info import ArtifactError, read_info
from engines.catalogue import TORCHVISION_WEIGHTS_NORMALISATION
from engines.checkpoints import normalisation_path
from engines.datasets import IMAGENET_MEAN, IMAGENET_STD
from engines.jobs import InitialWeights, JobError, TrainingJob

__all__ = ["Normalisation", "describe", "input_normalisation", "run_normalisation"]

Triple = tuple[float, float, float]
# (mean, std), one number per channel each.
Normalisation = tuple[Triple, Triple]


def input_normalisation(architecture: str, source: InitialWeights | None) -> Normalisation:
    """(mean, std) that a training of `architecture` starting from `source` normalises
    its images with: what the weights learned with. An earlier task's artifact records
    its own; torchvision's weights use ImageNet's, except googlenet's and inception_v3's;
    anything else (fresh weights, a plain state dict, which says nothing of it)
    ImageNet's."""
    if source is not None and source.kind == "artifact":
        try:
            info = read_info(source.path)
        except ArtifactError:
            pass  # loading it says why, in the job's own words
        else:
            if info.architecture == architecture:
                return info.mean, info.std
    if source is not None and source.kind == "pretrained":
        known = TORCHVISION_WEIGHTS_NORMALISATION.get(architecture)
        if known is not None:
            return known
    return IMAGENET_MEAN, IMAGENET_STD


def run_normalisation(job: TrainingJob) -> Normalisation:
    """(mean, std) this run normalises its images with. A fresh run takes what its
    starting weights learned with (`input_normalisation`) and records it in its output
    folder; a resumed run reads that record, so it never changes midway, whatever became
    of the file it started from. A run from before the record existed used ImageNet's.

    Raises JobError when the record cannot be read."""
    path = normalisation_path(job.output_dir)
    if job.resume_from:
        try:
            with open(path, encoding="utf-8") as f:
                recorded = json.load(f)
            return _triple(recorded["mean"]), _triple(recorded["std"])
        except FileNotFoundError:
            return IMAGENET_MEAN, IMAGENET_STD
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JobError(
                f"cannot read how this run normalises its images ({path}): {exc!r}"
            ) from None
    mean, std = input_normalisation(job.model, job.initial_weights)
    partial = path + ".partial"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(partial, "w", encoding="utf-8") as f:
            json.dump({"mean": list(mean), "std": list(std)}, f)
        os.replace(partial, path)  # never a torn record for a resume to trip on
    except OSError as exc:
        raise JobError(
            f"cannot record how this run normalises its images ({path}): {exc.strerror or exc}"
        ) from None
    return mean, std


def describe(mean: Triple, std: Triple) -> str:
    """A clause for the training's log, empty for ImageNet's (which every other run
    uses)."""
    if (mean, std) == (IMAGENET_MEAN, IMAGENET_STD):
        return ""
    shown = ", ".join(f"{m:g}/{s:g}" for m, s in zip(mean, std, strict=True))
    return f"; images normalised as the starting weights expect (mean/std per channel {shown})"


def _triple(values: Any) -> Triple:
    """Three numbers, one per channel; ValueError or TypeError otherwise."""
    first, second, third = (float(value) for value in values)
    return first, second, third
