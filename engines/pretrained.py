"""torchvision's pretrained weights, found in the local torch hub cache, without torch.

The server imports this when a training is submitted: it resolves a weights name
(`DEFAULT`, `IMAGENET1K_V1`, ... any case) against `engines/model_table.py` to the one
file torchvision would load, and says what an operator must do when that file is not in
the cache. Tandem never downloads weights: the file must already be there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from engines.model_table import DEFAULT_WEIGHTS, PRETRAINED_WEIGHTS

__all__ = [
    "PretrainedWeights",
    "UnknownWeights",
    "hub_checkpoints_dir",
    "missing_file_problem",
    "resolve",
]

DEFAULT = "DEFAULT"


class UnknownWeights(ValueError):
    """A weights name torchvision does not have for that model; the message is a sentence."""


@dataclass(frozen=True)
class PretrainedWeights:
    """One torchvision weights file for one model."""

    model: str
    # As asked, e.g. "default"; `member` is what it resolved to, e.g. "IMAGENET1K_V1".
    name: str
    member: str
    url: str
    # The URL's last part: the name torch.hub gives the downloaded file.
    file_name: str
    # Absolute, so a worker with another working directory finds the same file.
    path: Path


def hub_checkpoints_dir() -> Path:
    """The folder `torch.hub.load_state_dict_from_url` reads and writes weights files in.

    Follows `torch.hub.get_dir()`'s rules: `$TORCH_HOME/hub/checkpoints`, else
    `$XDG_CACHE_HOME/torch/hub/checkpoints`, else `~/.cache/torch/hub/checkpoints`. It
    cannot see `torch.hub.set_dir()`, which Tandem never calls.
    """
    # os.getenv with a default, as torch does: a variable set to "" counts as set.
    cache = os.getenv("XDG_CACHE_HOME", "~/.cache")
    torch_home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(torch_home, "hub", "checkpoints")


def _either(options: list[str]) -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def resolve(model: str, name: str) -> PretrainedWeights:
    """The file torchvision's weights `name` for `model` live in; `name` in any case,
    `DEFAULT` for the weights torchvision recommends.

    Raises UnknownWeights when the model has no pretrained weights or none called `name`.
    Whether the file is in the cache is `missing_file_problem`'s question.
    """
    members = PRETRAINED_WEIGHTS.get(model, {})
    default = DEFAULT_WEIGHTS.get(model)
    if not members or default is None:
        raise UnknownWeights(
            f"torchvision has no pretrained weights for model {model!r}: start it from "
            "random weights, a weights file or an earlier task's model"
        )
    wanted = name.strip().upper()
    member = default if wanted == DEFAULT else wanted
    if member not in members:
        valid = [f"{DEFAULT} ({default})", *members]
        raise UnknownWeights(
            f"model {model} has no pretrained weights named {name!r}: choose {_either(valid)}"
        )
    url = members[member]
    file_name = os.path.basename(urlparse(url).path)
    return PretrainedWeights(
        model=model,
        name=name,
        member=member,
        url=url,
        file_name=file_name,
        path=Path(os.path.abspath(hub_checkpoints_dir() / file_name)),
    )


def missing_file_problem(weights: PretrainedWeights) -> str | None:
    """None when the weights file is in the hub cache; else a sentence for an operator
    saying which file goes where and where to get it."""
    if weights.path.is_file():
        return None
    return (
        f"pretrained weights {weights.member} for {weights.model} need {weights.file_name} "
        f"in {weights.path.parent} (the torch hub cache; TORCH_HOME moves it); Tandem never "
        f"downloads: fetch {weights.url} where there is internet and copy it there"
    )
