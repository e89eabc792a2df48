"""The parts of a training recipe that are not the loop: the optimizer and its weight
decay, the learning-rate schedule, the arithmetic (precision), and which epoch to keep.

Each is a pure function of the job and the step, or state small enough to travel in an
epoch's metrics, so that a resumed run (`engines.training_state`) needs nothing more
than the step it is at to carry on exactly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from engines.jobs import JobError, TrainingJob

OptimizerFactory = Callable[[list[dict[str, Any]], float], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": lambda groups, lr: torch.optim.Adam(groups, lr=lr),
    "adamw": lambda groups, lr: torch.optim.AdamW(groups, lr=lr),
    "rmsprop": lambda groups, lr: torch.optim.RMSprop(groups, lr=lr),
    "sgd": lambda groups, lr: torch.optim.SGD(groups, lr=lr, momentum=0.9),
}

LR_SCHEDULES = ("constant", "cosine", "step")
# `step` divides the rate by ten this many times over a run.
STEP_DROPS = 3
STEP_FACTOR = 0.1


def optimizer_factory(name: str) -> OptimizerFactory:
    factory = OPTIMIZERS.get(name.lower())
    if factory is None:
        raise JobError(f"unknown optimizer {name!r}; choose one of {', '.join(sorted(OPTIMIZERS))}")
    return factory


def build_optimizer(job: TrainingJob, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The job's optimizer over every parameter of `model`. Weight decay applies to
    weight matrices and kernels only: decaying biases and normalisation scales towards
    zero fights the normalisation and costs accuracy (as in torchvision's recipes)."""
    decayed: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for parameter in model.parameters():
        (decayed if parameter.ndim > 1 else plain).append(parameter)
    groups = [
        {"params": decayed, "weight_decay": job.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return optimizer_factory(job.optimizer)(groups, job.learning_rate)


def lr_factor(job: TrainingJob, step: int, steps_per_epoch: int) -> float:
    """The learning rate at global `step` (0-based, over every epoch) as a fraction of
    `job.learning_rate`: linear warm-up over `warmup_epochs`, then the schedule."""
    warmup = job.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if job.lr_schedule == "constant":
        return 1.0
    if job.lr_schedule == "cosine":
        total = job.epochs * steps_per_epoch
        # From 1 after warm-up to 0 at the last step (which still takes a small step).
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if job.lr_schedule == "step":
        period = max(1, job.epochs // STEP_DROPS)
        return float(STEP_FACTOR ** ((step // steps_per_epoch) // period))
    raise JobError(
        f"unknown lr_schedule {job.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}"
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class Precision:
    """The arithmetic a job runs in: `name` is what `auto` resolved to."""

    name: str
    # None for fp32: no autocast.
    dtype: torch.dtype | None
    # fp16 needs a gradient scaler: its small gradients would underflow to zero.
    scaled: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(device.type) if self.scaled else None

    def checks_gradients(self, device: torch.device) -> bool:
        """Whether a step on `device` must see finite gradients before it is taken: bf16
        on the CPU. torch 2.14.1's CPU bf16 convolution weight-gradient kernel now and
        then returns a non-finite value when it runs on more than one thread (resnet18 at
        16 px, layer4.0.conv1: 2 runs in 8 with the same seed, in plain PyTorch), which
        one step would spread to every weight. fp16's scaler checks on its own; on a GPU
        the fault was not seen and the check would make the host wait every step."""
        return self.dtype == torch.bfloat16 and device.type == "cpu"


def gradients_finite(model: torch.nn.Module) -> bool:
    """Whether every gradient of `model` is finite (one fused norm over all of them)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _native_bf16(device: torch.device) -> bool:
    # Ampere (compute capability 8.0) and later compute in bf16; on older GPUs torch
    # emulates it (`is_bf16_supported` says yes), slower than fp16 with a scaler.
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(asked: str, device: torch.device) -> Precision:
    """`asked` ("fp32", "bf16", "fp16", "auto") on `device`. `auto` is bf16 on a GPU
    that has it (no scaler needed: bf16 keeps fp32's range), else fp16 with a scaler on
    a GPU, and fp32 on the CPU (where 16-bit arithmetic is rarely faster)."""
    name = asked.lower()
    if name == "auto" and device.type != "cuda":
        name = "fp32"
    elif name == "auto":
        name = "bf16" if _native_bf16(device) else "fp16"
    if name not in _DTYPES:
        raise JobError(f"unknown precision {asked!r}; choose one of auto, fp32, bf16, fp16")
    return Precision(name, _DTYPES[name], scaled=name == "fp16")


# Metrics that carry the choice of the epoch to keep from one epoch to the next, and
# through checkpoints and resume points.
BEST_EPOCH = "best_epoch"
BEST_VAL_ACCURACY = "best_val_accuracy"
BEST_VAL_LOSS = "best_val_loss"
EPOCHS_SINCE_BETTER_LOSS = "epochs_without_better_val_loss"


def keep_best(metrics: dict[str, float], last: dict[str, float]) -> dict[str, float]:
    """`metrics` of the epoch just ended, with the running choice of the epoch to keep
    (`last` holds the one before's): the best validation accuracy, ties to the lower
    validation loss, and the epochs since the validation loss last improved."""
    epoch = metrics["epoch"]
    out = dict(metrics)
    if "val_accuracy" not in metrics:
        out[BEST_EPOCH] = epoch  # nothing to judge by: the last epoch is kept
        return out
    accuracy, loss = metrics["val_accuracy"], metrics["val_loss"]
    if BEST_EPOCH not in last or BEST_VAL_ACCURACY not in last:
        out.update({BEST_EPOCH: epoch, BEST_VAL_ACCURACY: accuracy, BEST_VAL_LOSS: loss})
        out[EPOCHS_SINCE_BETTER_LOSS] = 0.0
        return out
    best_accuracy = last[BEST_VAL_ACCURACY]
    best_loss = last[BEST_VAL_LOSS]
    better = accuracy > best_accuracy or (accuracy == best_accuracy and loss < best_loss)
    out[BEST_EPOCH] = epoch if better else last[BEST_EPOCH]
    out[BEST_VAL_ACCURACY] = max(accuracy, best_accuracy)
    out[BEST_VAL_LOSS] = min(loss, best_loss)
    out[EPOCHS_SINCE_BETTER_LOSS] = 0.0 if loss < best_loss else last[EPOCHS_SINCE_BETTER_LOSS] + 1
    return out


def should_stop_early(job: TrainingJob, metrics: dict[str, float]) -> bool:
    patience = job.early_stopping_patience
    return patience > 0 and metrics.get(EPOCHS_SINCE_BETTER_LOSS, 0.0) >= patience


def hold_norm_statistics(model: torch.nn.Module, trainable: frozenset[str]) -> None:
    """Puts the batch-norm layers outside `trainable` in eval mode: a frozen backbone
    keeps the running statistics its weights were trained with, instead of drifting to
    a few batches of the new data (call after `model.train()`)."""
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            names = {f"{prefix}.{name}" for name, _ in module.named_parameters()}
            if not names & trainable:
                module.eval()


@contextlib.contextmanager
def frozen_except(model: torch.nn.Module, trainable: frozenset[str]) -> Iterator[None]:
    """Only the parameters named in `trainable` learn inside; the others get no
    gradients (the optimizer skips parameters without one)."""
    changed = []
    for name, parameter in model.named_parameters():
        if name not in trainable and parameter.requires_grad:
            parameter.requires_grad_(False)
            changed.append(parameter)
    try:
        yield
    finally:
        for parameter in changed:
            parameter.requires_grad_(True)
