"""The server's own record of a task: what the store keeps and the servicers show."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler import Kind
from scheduler.memory import Shape
from tandem.contract import TERMINAL_STATE_NAMES


class TaskState(enum.Enum):
    """Life cycle of a task; names match `tandem.v1.TaskState` without the prefix."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(TaskState(name) for name in TERMINAL_STATE_NAMES)

# How a training ran before each of these parameters existed: a task stored then keeps
# its recipe when it is shown, recovered or resumed after an upgrade.
LEGACY_TRAINING_PARAMS: dict[str, Any] = {
    "preemptible": True,
    "freeze_epochs": 0,
    "augment": "none",
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "lr_schedule": "constant",
    "warmup_epochs": 0,
    "early_stopping_patience": 0,
    "precision": "fp32",
}


class TaskKind(enum.Enum):
    """What a task does; values are the scheduler's slot kinds."""

    TRAINING = "training"
    INFERENCE = "inference"

    @property
    def slot(self) -> Kind:
        """The kind of slot a task of this kind takes: the one mapping between the two."""
        return Kind(self.value)


@dataclass
class TaskRecord:
    """One task as stored. Mutable: the task manager updates it as the task moves."""

    task_id: str
    kind: TaskKind
    state: TaskState
    priority: int
    # Requested device: cpu, cuda, cuda:N or auto.
    device: str
    # Parameters with defaults filled in (TrainingParams / InferenceParams field names).
    params: dict[str, Any]
    create_time: float
    request_id: str = ""
    assigned_device: str = ""
    start_time: float | None = None
    end_time: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    model_path: str = ""
    output_path: str = ""
    last_seq: int = 0
    # Times a more urgent task preempted it (training).
    preemptions: int = 0
    # Not stored: seconds it has waited in the queue over all its waits so far (the
    # aging a preempted task keeps), and when (wall clock) it last entered the queue.
    waited_s: float = 0.0
    queued_at: float | None = None

    @property
    def training_params(self) -> dict[str, Any]:
        """A training task's parameters, those it was stored without (it was submitted
        before they existed) as it then ran."""
        return {**LEGACY_TRAINING_PARAMS, **self.params}

    @property
    def preemptible(self) -> bool:
        """Whether a more urgent task may preempt it: training that did not opt out."""
        return self.kind is TaskKind.TRAINING and bool(self.params.get("preemptible", True))

    def shape(self) -> Shape:
        """What the task's GPU memory use depends on."""
        p = self.params
        # Inference runs in fp32; a training's precision changes its activations' size.
        precision = p.get("precision", "fp32") if self.kind is TaskKind.TRAINING else "fp32"
        return Shape(p["model"], p["batch_size"], p["image_size"], self.kind.slot, precision)


# The metrics a training's last log line, "succeeded: ...", shows when it has them.
_SUMMARY_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def success_message(metrics: Mapping[str, float]) -> str:
    """The sentence a task's SUCCEEDED event says, with its headline metrics."""
    shown = [f"{k} {metrics[k]:.4g}" for k in _SUMMARY_METRICS if k in metrics]
    return f"succeeded: {', '.join(shown)}" if shown else "succeeded"
