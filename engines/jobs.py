"""What a worker is asked to run and what it reports back: plain, picklable data.

These values cross the pipe between the server process and a worker process, so
they hold only builtins (no tensors, no protobuf messages).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Level(enum.Enum):
    """Severity of an event line, mirrored by `tandem.v1.LogLevel`."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class JobEvent:
    """One thing a running job reports: a line of text, or metrics with a line."""

    message: str
    level: Level = Level.INFO
    # Non-empty makes this a metrics event (loss, accuracy, images_per_sec, progress...).
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class InitialWeights:
    """Where a training's weights start, resolved by the server to one file to load.

    `kind` is "artifact" (`init_from`: a Tandem model file), "pretrained" (torchvision's
    weights, a file in the local torch hub cache) or "state_dict" (`weights_path`: a plain
    state dict in torchvision's layout). `description` names the source in the job's log.
    """

    kind: str
    path: str
    description: str


@dataclass(frozen=True)
class TrainingJob:
    """A training run, fully resolved: defaults filled in, paths absolute."""

    task_id: str
    model: str
    # Absolute path of an ImageFolder directory, or the literal "synthetic".
    dataset: str
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    image_size: int
    seed: int
    val_split: float
    # Concrete torch device: "cpu" or "cuda:N".
    device: str
    # Directory the job owns: checkpoints and the final model go here.
    output_dir: str
    # torch intra-op threads for this job, so concurrent jobs don't oversubscribe cores.
    num_threads: int = 1
    # A checkpoint of an earlier, interrupted run of this task to continue from.
    resume_from: str = ""
    # Where the weights start (None: random); the head is replaced when classes differ.
    initial_weights: InitialWeights | None = None
    # The recipe (see `TrainRequest`); the defaults here are the plain loop's, the
    # contract's defaults are filled in by the server.
    freeze_epochs: int = 0
    augment: str = "none"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    early_stopping_patience: int = 0
    # "fp32", "bf16", "fp16" or "auto" (resolved on the device by the worker).
    precision: str = "fp32"


@dataclass(frozen=True)
class JobResult:
    """What a job that finished normally leaves behind."""

    metrics: dict[str, float]
    # The final model artifact (training); empty when the job writes none.
    model_path: str = ""
    # The results file (batch inference); empty when the job writes none.
    output_path: str = ""


class JobCancelled(Exception):
    """Raised inside a job when it noticed a cancel request at a batch boundary."""


@dataclass(frozen=True)
class Preemption:
    """Where a training job yielded its device: the resume point it saved, the epoch
    (1-based) and the batches of it already run, and how long the save took."""

    checkpoint: str
    epoch: int
    batches_done: int
    save_seconds: float


class JobPreempted(Exception):
    """Raised inside a training job that yielded at a batch boundary, as asked."""

    def __init__(self, preemption: Preemption) -> None:
        super().__init__(
            f"preempted at epoch {preemption.epoch} after batch {preemption.batches_done}"
        )
        self.preemption = preemption


class JobError(Exception):
    """A job failed for a reason a user can act on (bad dataset, model/size mismatch).

    The message is shown to the user as the task's error; it must read as a sentence.
    """


@dataclass(frozen=True)
class InferenceJob:
    """A batch inference over a dataset, fully resolved."""

    task_id: str
    # A model artifact written by training (see engines.artifacts).
    model_path: str
    # Absolute path of an ImageFolder or a flat folder of images, or "synthetic".
    dataset: str
    batch_size: int
    top_k: int
    # Concrete torch device: "cpu" or "cuda:N".
    device: str
    # Directory the job owns: its predictions file goes here.
    output_dir: str
    num_threads: int = 1


@dataclass(frozen=True)
class ServeJob:
    """Keep a model loaded on a device and answer prediction batches until told to stop."""

    task_id: str
    model_path: str
    device: str
    num_threads: int = 1


@dataclass(frozen=True)
class Prediction:
    """One label of a top-k answer."""

    label: str
    score: float
    index: int


@dataclass(frozen=True)
class Pixels:
    """An image its caller has already preprocessed (the Open Inference Protocol's FP32
    input): the model's input tensor for one image, (3, H, W) in row-major order, as
    little-endian float32 bytes, normalised with the model's mean and std."""

    data: bytes


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for a user's sentence."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
