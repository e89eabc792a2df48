"""Loads a training's starting weights into a freshly built model.

The source (`engines.jobs.InitialWeights`) is one file: an earlier task's model artifact,
torchvision's pretrained weights from the hub cache, or a plain state dict in
torchvision's layout. Every tensor whose name and shape fit is copied in; the classifier's
final layer keeps its fresh initialisation when the file's is sized for other classes.
Anything else that does not fit is a JobError that says what. Files are read with
`weights_only=True`: one that carries code is refused, never run.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engines.artifacts import ArtifactError, load_artifact
from engines.jobs import InitialWeights, JobError, first_line

__all__ = ["WeightsReport", "head_parameter_names", "load_initial_weights"]

# How many names an error sentence lists before it says "and N more".
_NAMES_SHOWN = 4

# zoo builds these without their auxiliary classifiers (a plain classifier has one output),
# but torchvision's own weights carry them, and torchvision drops them after loading too:
# weights the model has no layer for and never computes with are harmless to skip.
_AUX_CLASSIFIERS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}

# torchvision's densenet files predate its module names: `norm.1` there is `norm1` in the
# model. torchvision renames them with this pattern when it loads them; so do we, counters
# included (its own files are older than batch norm's counter, a re-saved one may not be).
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)

# A batch norm counter that only matters with momentum=None (torchvision uses a fixed
# momentum) and that files saved before torch 0.4.1 lack; torch itself fills it with 0.
_BATCH_NORM_COUNTER = "num_batches_tracked"

# Wrappers training scripts put around a state dict.
_WRAPPER_KEYS = ("state_dict", "model")
_DATA_PARALLEL_PREFIX = "module."


@dataclass(frozen=True)
class WeightsReport:
    """What `load_initial_weights` did, for the job's log."""

    # Names the source, e.g. "torchvision resnet18 IMAGENET1K_V1 weights".
    source: str
    loaded: tuple[str, ...]
    # Left at their fresh initialisation: the classifier's final layer, sized anew.
    new: tuple[str, ...]
    # Tensors in the model's state dict: loaded + new + counters the file lacked.
    total: int
    num_classes: int

    def sentence(self) -> str:
        text = f"started from {self.source}: loaded {len(self.loaded)} of {self.total} tensors"
        if self.new:
            text += f"; new (sized to {self.num_classes} classes): {', '.join(self.new)}"
        return text


def head_parameter_names(model: torch.nn.Module) -> frozenset[str]:
    """The parameter names of the classifier's final layer (`fc.weight`, `fc.bias`, ...);
    empty for a model without a Linear or Conv2d layer.

    The head is the last Linear or Conv2d in registration order: every torchvision
    classifier registers its output layer last (tests/engines/test_initial_weights.py
    checks this for every family), so no forward pass is needed.
    """
    head: tuple[str, torch.nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            head = (name, module)
    if head is None:
        return frozenset()
    prefix, module = head
    return frozenset(f"{prefix}.{name}" for name, _ in module.named_parameters(recurse=False))


def load_initial_weights(
    model: torch.nn.Module,
    architecture: str,
    source: InitialWeights,
    classes: Sequence[str] | None = None,
) -> WeightsReport:
    """Copy `source`'s weights into `model` (a freshly built `architecture`), in place.

    `classes` are the dataset's: an artifact trained on other classes (other names, even
    as many of them) gets a new head, since its rows would answer for the wrong labels.

    Raises JobError, with a sentence for the user, when the file is missing, unreadable,
    carries code, is an artifact of another architecture, or holds weights that do not
    fit the model outside its classifier head.
    """
    keep_head = True
    if source.kind == "artifact":
        state, trained_on = _artifact_state(architecture, source)
        keep_head = classes is None or tuple(classes) == trained_on
    elif source.kind in ("pretrained", "state_dict"):
        state = _plain_state(source)
    else:
        raise ValueError(f"unknown kind of initial weights {source.kind!r}")
    state = _torchvision_layout(state, architecture)
    return _copy_into(model, architecture, state, source.description, keep_head=keep_head)


def _artifact_state(
    architecture: str, source: InitialWeights
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The artifact's weights and the classes it was trained on."""
    try:
        artifact = load_artifact(source.path)
    except ArtifactError as exc:
        raise JobError(f"cannot start from {source.description}: {exc}") from None
    if artifact.architecture != architecture:
        raise JobError(
            f"cannot start from {source.description}: it is a {artifact.architecture} "
            f"and this task trains a {architecture}"
        )
    return dict(artifact.state_dict), tuple(artifact.classes)


def _plain_state(source: InitialWeights) -> dict[str, torch.Tensor]:
    path = source.path
    failed = f"cannot start from {source.description}"
    if os.path.isdir(path):
        raise JobError(f"{failed}: {path} is a folder, not a weights file")
    if not os.path.exists(path):
        raise JobError(f"{failed}: {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler refuses any global outside its allowlist (os.system,
        # a class instance) before calling it; name the global when torch does.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise JobError(
            f"{failed}: {path} holds code or objects other than tensors{what}, "
            "so it was refused, not run"
        ) from None
    except Exception as exc:
        # Truncated zips raise RuntimeError, empty files EOFError, text files KeyError...
        raise JobError(
            f"{failed}: {path} is damaged or not a PyTorch weights file "
            f"({type(exc).__name__}: {first_line(exc).split('. ')[0]})"
        ) from None
    state = _unwrap(raw)
    if state is None:
        raise JobError(
            f"{failed}: {path} is not a state dict (a table of tensors by name, as "
            "model.state_dict() returns)"
        )
    return state


def _is_state_dict(value: object) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _unwrap(raw: Any) -> dict[str, torch.Tensor] | None:
    """The state dict in `raw`: itself, or under one of the usual wrapper keys."""
    if _is_state_dict(raw):
        return dict(raw)
    if isinstance(raw, Mapping):
        for key in _WRAPPER_KEYS:
            if _is_state_dict(raw.get(key)):
                return dict(raw[key])
    return None


def _torchvision_layout(
    state: dict[str, torch.Tensor], architecture: str
) -> dict[str, torch.Tensor]:
    """`state` with the key names a freshly built `architecture` uses."""
    # nn.DataParallel saves its wrapped model's keys behind "module.".
    if all(key.startswith(_DATA_PARALLEL_PREFIX) for key in state):
        state = {key.removeprefix(_DATA_PARALLEL_PREFIX): value for key, value in state.items()}
    if architecture.startswith("densenet"):
        state = {_OLD_DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    return state


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = len(names) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(str(size) for size in tensor.shape) + "]"


def _copy_into(
    model: torch.nn.Module,
    architecture: str,
    state: dict[str, torch.Tensor],
    description: str,
    *,
    keep_head: bool = True,
) -> WeightsReport:
    target = model.state_dict()
    head = head_parameter_names(model)
    num_classes = _num_classes(target, head)
    # The head is taken whole or not at all: half a classifier from the file is no use.
    head_fits = keep_head and all(
        key in state and state[key].shape == target[key].shape for key in head
    )
    loaded: list[str] = []
    new: list[str] = []
    missing: list[str] = []
    misshaped: list[str] = []
    for key, tensor in target.items():
        if key in head and not head_fits:
            new.append(key)
        elif key in state and state[key].shape == tensor.shape:
            loaded.append(key)
        elif key in state:
            misshaped.append(f"{key} (file {_shape(state[key])}, model {_shape(tensor)})")
        elif not key.endswith(_BATCH_NORM_COUNTER):
            missing.append(key)
    aux = _AUX_CLASSIFIERS.get(architecture, ())
    unexpected = [key for key in state if key not in target and not key.startswith(aux)]

    fits = f"{description} does not fit a {architecture} with {num_classes} classes"
    if not loaded:
        raise JobError(
            f"{fits}: none of the file's {len(state)} tensors match the model's names and "
            f"shapes, so they look like weights of another model ({_few(list(state))})"
        )
    problems = []
    if missing:
        problems.append(f"the file lacks {len(missing)} of the model's tensors ({_few(missing)})")
    if misshaped:
        problems.append(
            f"{len(misshaped)} of the model's tensors have another shape in the file "
            f"({_few(misshaped)})"
        )
    if unexpected:
        problems.append(
            f"the file has {len(unexpected)} tensors the model lacks ({_few(unexpected)})"
        )
    if problems:
        raise JobError(f"{fits}: {'; '.join(problems)}")
    # A diverged run's artifact, or vgg16's IMAGENET1K_FEATURES (NaN outside `features`):
    # training from NaN only yields NaN, so say so now rather than after the first epoch.
    broken = [
        key
        for key in loaded
        if state[key].is_floating_point() and not bool(torch.isfinite(state[key]).all())
    ]
    if broken:
        raise JobError(
            f"cannot start from {description}: {len(broken)} of its tensors hold NaN or "
            f"infinite values ({_few(broken)})"
        )
    # Copied through the state dict's tensors, which share the parameters' storage, rather
    # than load_state_dict: its per-module hooks want version metadata a plain dict lacks
    # (mnasnet refuses to load without it), and the names are already checked above.
    with torch.no_grad():
        for key in loaded:
            target[key].copy_(state[key])
    return WeightsReport(
        source=description,
        loaded=tuple(loaded),
        new=tuple(new),
        total=len(target),
        num_classes=num_classes,
    )


def _num_classes(target: Mapping[str, torch.Tensor], head: frozenset[str]) -> int:
    # Every parameter of the output layer (weight and bias) has one row per class.
    return next((target[key].shape[0] for key in sorted(head)), 0)
