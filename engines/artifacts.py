"""Model artifacts: a trained model's weights plus everything needed to use them again.

An artifact is a `torch.save` dict that names its architecture, class names, input size
and normalisation, so a file alone is enough to rebuild the model and preprocess images
for it. It holds only tensors and builtins, and is always read back with
`torch.load(..., weights_only=True)`: a model file can never run code on load. Its
format and checks are `engines.artifact_info`'s, which reads the description without torch.
"""

from __future__ import annotations

import io
import os
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import IO, Any

import torch

from engines import zoo
from engines.artifact_info import (
    FORMAT,
    VERSION,
    ArtifactError,
    ArtifactInfo,
    check_file,
    parse,
    unreadable,
)
from engines.jobs import first_line

__all__ = [
    "ArtifactError",
    "ModelArtifact",
    "load_artifact",
    "load_artifact_bytes",
    "load_weights",
    "save_artifact",
]


@dataclass(frozen=True)
class ModelArtifact(ArtifactInfo):
    """A loaded artifact: the model's description and its weights (on `map_location`)."""

    state_dict: Mapping[str, torch.Tensor] = field(repr=False)
    optimizer_state: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def build_model(self) -> torch.nn.Module:
        """The model with these weights loaded, in eval mode, on the weights' device."""
        try:
            model = zoo.build_model(self.architecture, self.num_classes, self.image_size)
            load_weights(model, self.state_dict)
        except (ValueError, RuntimeError) as exc:
            # load_state_dict raises RuntimeError listing missing/unexpected/mis-shaped keys.
            raise ArtifactError(
                f"the weights do not fit a {self.architecture} with {self.num_classes} "
                f"classes at {self.image_size} px: {first_line(exc)}"
            ) from None
        # load_state_dict copies into the model's CPU parameters; follow map_location.
        device = next(iter(self.state_dict.values())).device
        return model.to(device).eval()


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """`model.load_state_dict(state)` for weights read back from a file. A saved state
    dict loses the per-module versions `state_dict()` carries in its `_metadata`, and
    some modules refuse to load without them (mnasnet's batch norm: "version should be
    set"); the freshly built model's own versions are the right ones."""
    versioned: OrderedDict[str, torch.Tensor] = OrderedDict(state)
    versioned._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(versioned)


def _to_cpu(value: Any) -> Any:
    # Artifacts hold CPU tensors so a model trained on cuda:1 loads on a CPU-only host.
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_cpu(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_to_cpu(item) for item in value)
    return value


def save_artifact(
    path: str,
    *,
    model: torch.nn.Module,
    architecture: str,
    classes: Sequence[str],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    epoch: int,
    metrics: Mapping[str, float],
    optimizer_state: Mapping[str, Any] | None = None,
) -> None:
    """Write the artifact at `path` atomically: readers see the old file or the new one.

    The parent folder is created if needed.
    """
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture,
        "classes": [str(name) for name in classes],
        "image_size": int(image_size),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "epoch": int(epoch),
        "metrics": {str(key): float(value) for key, value in metrics.items()},
        "state_dict": _to_cpu(dict(model.state_dict())),
    }
    if optimizer_state is not None:
        payload["optimizer_state"] = _to_cpu(dict(optimizer_state))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # The temporary file sits beside the target so os.replace is a rename on one
    # filesystem; os.open with 0o666 lets the umask set its mode (mkstemp would force 0600).
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    handle = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def _parse(raw: object, path: str) -> ModelArtifact:
    parsed = parse(raw, path, lambda value: isinstance(value, torch.Tensor))
    return ModelArtifact(
        **{f.name: getattr(parsed.info, f.name) for f in fields(ArtifactInfo)},
        state_dict=parsed.state_dict,
        optimizer_state=parsed.optimizer_state,
    )


def load_artifact(path: str, map_location: str | torch.device = "cpu") -> ModelArtifact:
    """Read and check the artifact at `path`, its tensors placed on `map_location`.

    Raises ArtifactError for a missing, unreadable, corrupt or foreign file, and for any
    file that would need to import or run code to load (refused, never executed).
    """
    check_file(path)
    return _load(path, path, map_location)


def load_artifact_bytes(
    data: bytes, path: str, map_location: str | torch.device = "cpu"
) -> ModelArtifact:
    """The same for the bytes of the file at `path` (read elsewhere: a model sent to
    another machine), with the same checks."""
    return _load(io.BytesIO(data), path, map_location)


def _load(source: str | IO[bytes], path: str, map_location: str | torch.device) -> ModelArtifact:
    try:
        # weights_only=True: the unpickler accepts tensors and builtins only, so a file
        # carrying a pickled callable (os.system, a class instance) is refused, not run.
        raw = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as exc:
        # torch reports foreign globals as UnpicklingError, truncated zips as RuntimeError,
        # empty files as EOFError, and so on; to a caller they all mean the same thing.
        raise unreadable(path, exc) from None
    return _parse(raw, path)
