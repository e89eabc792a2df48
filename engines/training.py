"""Training: one `TrainingJob` run start to finish inside a worker process.

`train` is a plain supervised loop (seeded, cross-entropy, one optimizer) that reports
through `emit` and polls `should_stop` and `should_yield` between batches. It leaves a
checkpoint per epoch and a final model artifact in the job's output folder, and turns
the failures a user can fix (bad dataset, a model that cannot take the image size, CUDA
out of memory) into a `JobError` whose message says so.

Asked to yield (a more urgent task needs the device), it saves its whole state at the
next batch boundary (`engines.training_state`) and raises `JobPreempted`; a job whose
`resume_from` names that file continues with exactly the batches it had not run.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from engines import artifacts, training_state, zoo
from engines.checkpoints import checkpoint_path, resume_point_path
from engines.datasets import LabelledDataset, LoadedDataset, load_dataset, split
from engines.devices import free_after_oom, resolve_device
from engines.jobs import (
    JobCancelled,
    JobError,
    JobEvent,
    JobPreempted,
    JobResult,
    Preemption,
    TrainingJob,
    first_line,
)
from engines.training_state import EpochBatches, ResumePoint

# Progress events at most this often; the last batch of an epoch is always reported.
PROGRESS_INTERVAL_S = 0.5

OptimizerFactory = Callable[[Iterator[torch.nn.Parameter], float], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
}


def model_path(output_dir: str) -> str:
    """Where the final model artifact is written."""
    return os.path.join(output_dir, "model.pt")


def _never() -> bool:
    return False


def train(
    job: TrainingJob,
    emit: Callable[[JobEvent], None],
    should_stop: Callable[[], bool],
    should_yield: Callable[[], bool] = _never,
) -> JobResult:
    """Run `job`; return its final metrics and model path.

    Raises JobCancelled when `should_stop()` turns true, JobPreempted after saving a
    resume point when `should_yield()` does (both checked before every batch), and
    JobError with a user-facing sentence when the job cannot run as asked.
    """
    _check_numbers(job)
    make_optimizer = _optimizer(job.optimizer)
    device = resolve_device(job.device)
    torch.manual_seed(job.seed)
    # Process-wide, which is right: a worker process runs one job at a time.
    torch.set_num_threads(max(1, job.num_threads))
    data = load_dataset(job.dataset, job.image_size, job.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    oom = ""
    try:
        return _fit(job, emit, should_stop, should_yield, device, data, make_optimizer)
    except torch.cuda.OutOfMemoryError as exc:
        oom = first_line(exc)
    free_after_oom()  # outside the except block, so the traceback's tensors are garbage
    raise JobError(
        f"out of memory on {device} training {job.model} with batch_size {job.batch_size} at "
        f"{job.image_size} px; try a smaller batch_size or image_size ({oom})"
    )


def _fit(
    job: TrainingJob,
    emit: Callable[[JobEvent], None],
    should_stop: Callable[[], bool],
    should_yield: Callable[[], bool],
    device: torch.device,
    data: LoadedDataset,
    make_optimizer: OptimizerFactory,
) -> JobResult:
    try:
        model = zoo.build_model(job.model, len(data.classes), job.image_size)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    model = model.to(device)
    optimizer = make_optimizer(model.parameters(), job.learning_rate)
    run = _Run(job, emit, should_stop, should_yield, device, data, model, optimizer)
    # A preemption's resume point has its own place in the job's folder; anything
    # else to resume from is an epoch checkpoint.
    if job.resume_from and job.resume_from == resume_point_path(job.output_dir):
        point = _load_resume_point(job, model, optimizer)
        emit(
            JobEvent(
                f"resumed at epoch {point.epoch} after batch {point.batches_done} "
                f"of {run.batches}, where it was preempted"
            )
        )
        return run.run(resume=point)
    done, metrics = 0, dict[str, float]()
    if job.resume_from:
        done, metrics = _resume(job, model, optimizer, device)
        emit(JobEvent(f"resumed from epoch {done}"))
    return run.run(first_epoch=done + 1, metrics=metrics)


def _load_resume_point(
    job: TrainingJob, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> ResumePoint:
    """Loads a preempted run's whole state; its generators are restored last, so that
    nothing drawn while building the run moves them."""
    try:
        point = training_state.load(job.resume_from)
        model.load_state_dict(point.model)
        optimizer.load_state_dict(point.optimizer)
        training_state.restore_rng(point.rng)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise JobError(f"cannot resume from {job.resume_from}: {first_line(exc)}") from None
    return point


def _resume(
    job: TrainingJob, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[int, dict[str, float]]:
    """Loads an interrupted run's checkpoint into `model` and `optimizer`; returns the
    epochs it had finished and their metrics."""
    try:
        checkpoint = artifacts.load_artifact(job.resume_from, map_location=str(device))
        model.load_state_dict(dict(checkpoint.state_dict))
        if checkpoint.optimizer_state is not None:
            optimizer.load_state_dict(dict(checkpoint.optimizer_state))
    except (artifacts.ArtifactError, RuntimeError, ValueError, KeyError) as exc:
        raise JobError(f"cannot resume from {job.resume_from}: {first_line(exc)}") from None
    return checkpoint.epoch, dict(checkpoint.metrics)


def _check_numbers(job: TrainingJob) -> None:
    if job.epochs < 1:
        raise JobError(f"epochs must be at least 1, not {job.epochs}")
    if job.batch_size < 1:
        raise JobError(f"batch_size must be at least 1, not {job.batch_size}")
    if not (math.isfinite(job.learning_rate) and job.learning_rate > 0):
        raise JobError(f"learning_rate must be a positive number, not {job.learning_rate}")


def _optimizer(name: str) -> OptimizerFactory:
    factory = OPTIMIZERS.get(name.lower())
    if factory is None:
        raise JobError(f"unknown optimizer {name!r}; choose one of {', '.join(sorted(OPTIMIZERS))}")
    return factory


def _is_size_error(exc: Exception) -> bool:
    # Shape errors surface as RuntimeError (a conv kernel bigger than its input) or
    # ValueError (batch norm over a single value); running out of memory or a CUDA fault
    # is not the image size's doing.
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(exc):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    return not (accelerator_error is not None and isinstance(exc, accelerator_error))


@dataclass
class _Totals:
    """Running sums over part of an epoch, kept on the device to avoid a sync per batch."""

    loss: torch.Tensor
    correct: torch.Tensor
    images: int = 0

    def mean_loss(self) -> float:
        return float(self.loss.item()) / max(self.images, 1)

    def accuracy(self) -> float:
        return float(self.correct.item()) / max(self.images, 1)


class _Run:
    """The loop of one job: its model, optimizer and loaders, epoch after epoch."""

    def __init__(
        self,
        job: TrainingJob,
        emit: Callable[[JobEvent], None],
        should_stop: Callable[[], bool],
        should_yield: Callable[[], bool],
        device: torch.device,
        data: LoadedDataset,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        self.job = job
        self.emit = emit
        self.should_stop = should_stop
        self.should_yield = should_yield
        self.device = device
        self.data = data
        self.model = model
        self.optimizer = optimizer
        self.criterion = torch.nn.CrossEntropyLoss()
        train_set, val_set = split(data.dataset, job.val_split, job.seed)
        size = len(train_set)  # type: ignore[arg-type]
        # A final batch of one image breaks batch norm in train mode ("expected more than
        # 1 value per channel"), so when the split leaves exactly one over, skip it.
        drop_last = size > job.batch_size and size % job.batch_size == 1
        self.order = EpochBatches(size, job.batch_size, job.seed, drop_last=drop_last)
        self.train_loader = self._loader(train_set, batch_sampler=self.order)
        self.val_loader = None if val_set is None else self._loader(val_set)
        self.batches = self.order.batches
        if self.batches == 0:
            raise JobError(f"dataset {job.dataset} leaves no images to train on")

    def _loader(
        self, dataset: LabelledDataset, batch_sampler: EpochBatches | None = None
    ) -> DataLoader[Any]:
        return DataLoader(
            dataset,
            # Training: the epoch's own order, from a given batch on (EpochBatches).
            batch_sampler=batch_sampler,
            batch_size=1 if batch_sampler is not None else self.job.batch_size,
            # Worker processes would multiply the cores a job uses; the scheduler sizes
            # num_threads for one process.
            num_workers=0,
            pin_memory=self.device.type == "cuda",
            # Each iteration draws a seed for loader workers from this generator; from
            # torch's global one it would move dropout's draws by one per epoch, and a
            # resumed run (which starts its iterator at another point) would differ.
            generator=torch.Generator().manual_seed(self.job.seed),
        )

    def run(
        self,
        first_epoch: int = 1,
        metrics: dict[str, float] | None = None,
        resume: ResumePoint | None = None,
    ) -> JobResult:
        """Epochs from `first_epoch` on, or from where `resume` stopped."""
        job = self.job
        n_train = len(self.train_loader.dataset)  # type: ignore[arg-type]
        n_val = 0 if self.val_loader is None else len(self.val_loader.dataset)  # type: ignore[arg-type]
        params = zoo.count_parameters(self.model)
        self.emit(
            JobEvent(
                f"training {job.model} ({params:,} parameters) on {self.device}: "
                f"{len(self.data)} images in {len(self.data.classes)} classes "
                f"({n_train} train, {n_val} validation), {job.epochs} epochs of "
                f"{self.batches} batches"
            )
        )
        metrics = dict(metrics or {})
        start, totals = 0, None
        if resume is not None:
            first_epoch, start, metrics = resume.epoch, resume.batches_done, dict(resume.metrics)
            totals = self._totals()
            totals.loss += resume.loss_sum
            totals.correct += resume.correct
            totals.images = resume.images
        for epoch in range(first_epoch, job.epochs + 1):
            metrics = self._epoch(epoch, metrics, start, totals)
            start, totals = 0, None
            self._stop_if_asked(f"after epoch {epoch}")
            self._save(checkpoint_path(job.output_dir, epoch), epoch, metrics, optimizer=True)
            self.emit(JobEvent(f"saved checkpoint epoch {epoch}"))
        if self.device.type == "cuda":
            metrics["peak_memory_bytes"] = float(torch.cuda.max_memory_allocated(self.device))
        final_path = model_path(job.output_dir)
        self._save(final_path, job.epochs, metrics, optimizer=False)
        self.emit(JobEvent(f"saved model {final_path}"))
        # A preemption's resume point is spent: nothing may resume from it again.
        with contextlib.suppress(FileNotFoundError):
            os.remove(resume_point_path(job.output_dir))
        return JobResult(metrics=metrics, model_path=final_path)

    def _yield(
        self, epoch: int, done: int, totals: _Totals, last_metrics: dict[str, float]
    ) -> None:
        """Saves the run's whole state after `done` batches of `epoch`, then raises
        JobPreempted."""
        began = time.monotonic()
        path = resume_point_path(self.job.output_dir)
        training_state.save(
            path,
            ResumePoint(
                epoch=epoch,
                batches_done=done,
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                loss_sum=float(totals.loss.item()),
                correct=float(totals.correct.item()),
                images=totals.images,
                metrics=last_metrics,
                rng=training_state.capture_rng(),
            ),
        )
        raise JobPreempted(Preemption(path, epoch, done, time.monotonic() - began))

    def _stop_if_asked(self, where: str) -> None:
        if self.should_stop():
            raise JobCancelled(f"training cancelled {where}")

    def _totals(self) -> _Totals:
        zero = torch.zeros((), device=self.device)
        return _Totals(loss=zero.clone(), correct=zero.clone())

    def _epoch(
        self,
        epoch: int,
        last_metrics: dict[str, float],
        start: int = 0,
        totals: _Totals | None = None,
    ) -> dict[str, float]:
        """One epoch, from batch `start` (0-based) on with the sums of the batches before
        it in `totals`; `last_metrics` (the epoch before's) go into a resume point."""
        self.model.train()
        totals = totals if totals is not None else self._totals()
        # Images of the batches run before a resume: not part of this run's speed.
        earlier = totals.images
        self.order.set_epoch(epoch, start)
        started = last_report = time.monotonic()
        for batch, (images, labels) in enumerate(self.train_loader, start=start + 1):
            self._stop_if_asked(f"at epoch {epoch} batch {batch}")
            if self.should_yield():
                self._yield(epoch, batch - 1, totals, last_metrics)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            logits = self._forward(images, first=epoch == 1 and batch == 1)
            loss = self.criterion(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            totals.loss += loss.detach() * len(labels)
            totals.correct += (logits.detach().argmax(dim=1) == labels).sum()
            totals.images += len(labels)
            now = time.monotonic()
            if batch == self.batches or now - last_report >= PROGRESS_INTERVAL_S:
                last_report = now
                self._report_progress(epoch, batch, totals, earlier, now - started)
        train_seconds = time.monotonic() - started
        metrics = {
            "epoch": float(epoch),
            "loss": totals.mean_loss(),
            "accuracy": totals.accuracy(),
        }
        if self.val_loader is not None:
            self._stop_if_asked(f"before validating epoch {epoch}")
            metrics["val_loss"], metrics["val_accuracy"] = self._validate(self.val_loader)
        metrics["images_per_sec"] = (totals.images - earlier) / max(train_seconds, 1e-9)
        metrics["progress"] = epoch / self.job.epochs
        # The CPU threads it runs on now: they follow the jobs sharing the device.
        metrics["threads"] = float(torch.get_num_threads())
        self.emit(JobEvent(_epoch_line(epoch, self.job.epochs, metrics), metrics=metrics))
        return metrics

    def _forward(self, images: torch.Tensor, *, first: bool) -> torch.Tensor:
        if not first:
            return self._logits(images)
        try:
            return self._logits(images)
        except (RuntimeError, ValueError) as exc:
            if not _is_size_error(exc):
                raise
            raise JobError(
                f"model {self.job.model} cannot take {self.job.image_size} px images: "
                f"{first_line(exc)}"
            ) from None

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        output = self.model(images)
        if not isinstance(output, torch.Tensor):
            # zoo builds every model with a single head; anything else is a zoo bug.
            raise TypeError(f"{self.job.model} returned {type(output).__name__}, not logits")
        return output

    def _report_progress(
        self, epoch: int, batch: int, totals: _Totals, earlier: int, seconds: float
    ) -> None:
        loss = totals.mean_loss()
        if not math.isfinite(loss):
            raise JobError(
                f"training diverged: the loss is {loss} at epoch {epoch} batch {batch}; "
                "try a lower learning_rate"
            )
        metrics = {
            "epoch": float(epoch),
            "batch": float(batch),
            "batches": float(self.batches),
            "loss": loss,
            "accuracy": totals.accuracy(),
            "images_per_sec": (totals.images - earlier) / max(seconds, 1e-9),
            "progress": (epoch - 1 + batch / self.batches) / self.job.epochs,
            "threads": float(torch.get_num_threads()),
        }
        self.emit(
            JobEvent(
                f"epoch {epoch}/{self.job.epochs} batch {batch}/{self.batches}: "
                f"loss {loss:.4f}, accuracy {metrics['accuracy']:.3f}",
                metrics=metrics,
            )
        )

    def _validate(self, loader: DataLoader[Any]) -> tuple[float, float]:
        self.model.eval()
        totals = self._totals()
        with torch.no_grad():
            for images, labels in loader:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                logits = self._logits(images)
                totals.loss += self.criterion(logits, labels) * len(labels)
                totals.correct += (logits.argmax(dim=1) == labels).sum()
                totals.images += len(labels)
        self.model.train()
        return totals.mean_loss(), totals.accuracy()

    def _save(self, path: str, epoch: int, metrics: dict[str, float], *, optimizer: bool) -> None:
        artifacts.save_artifact(
            path,
            model=self.model,
            architecture=self.job.model,
            classes=self.data.classes,
            image_size=self.job.image_size,
            mean=self.data.mean,
            std=self.data.std,
            epoch=epoch,
            metrics=metrics,
            optimizer_state=self.optimizer.state_dict() if optimizer else None,
        )


def _epoch_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    parts = [f"loss {metrics['loss']:.4f}", f"accuracy {metrics['accuracy']:.3f}"]
    if "val_loss" in metrics:
        parts += [
            f"val_loss {metrics['val_loss']:.4f}",
            f"val_accuracy {metrics['val_accuracy']:.3f}",
        ]
    return f"epoch {epoch}/{epochs}: {', '.join(parts)} ({metrics['images_per_sec']:.0f} images/s)"
