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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from engines import artifacts, normalisation, recipe, training_state, zoo
from engines.augment import AugmentedSet, pipeline
from engines.checkpoints import checkpoint_path, resume_point_path
from engines.datasets import LoadedDataset, load_dataset, split
from engines.devices import free_after_oom, resolve_device
from engines.initial_weights import head_parameter_names, load_initial_weights
from engines.jobs import (
    JobCancelled,
    JobError,
    JobEvent,
    JobPreempted,
    JobResult,
    Level,
    Preemption,
    TrainingJob,
    first_line,
)
from engines.training_state import EpochBatches, ResumePoint

# Progress events at most this often; the last batch of an epoch is always reported.
PROGRESS_INTERVAL_S = 0.5
# Top-5 accuracy is reported beside top-1 when there are more classes than this.
TOP_K = 5
# DataLoader worker processes of a GPU job at most: they decode and augment while the
# GPU computes. A CPU job loads in its own thread: its cores are its intra-op threads'.
MAX_LOADER_WORKERS = 8


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
    recipe.optimizer_factory(job.optimizer)  # an unknown name fails before any work
    device = resolve_device(job.device)
    torch.manual_seed(job.seed)
    # Process-wide, which is right: a worker process runs one job at a time.
    torch.set_num_threads(max(1, job.num_threads))
    mean, std = normalisation.run_normalisation(job)
    data = load_dataset(job.dataset, job.image_size, job.seed, mean, std)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    oom = ""
    try:
        return _fit(job, emit, should_stop, should_yield, device, data)
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
) -> JobResult:
    try:
        model = zoo.build_model(job.model, len(data.classes), job.image_size)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    if job.initial_weights is not None and not job.resume_from:
        # A resumed run's own weights replace these anyway.
        report = load_initial_weights(model, job.model, job.initial_weights, data.classes)
        emit(JobEvent(report.sentence()))
    model = model.to(device)
    if device.type == "cuda":
        # NHWC is what tensor cores want for convolutions; cuDNN picks the fastest
        # algorithm per shape once (every batch but an epoch's last has one shape).
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = recipe.build_optimizer(job, model)
    run = _Run(job, emit, should_stop, should_yield, device, data, model, optimizer)
    # A preemption's resume point has its own place in the job's folder; anything
    # else to resume from is an epoch checkpoint.
    if job.resume_from and job.resume_from == resume_point_path(job.output_dir):
        point = _load_resume_point(job, run)
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


def _load_resume_point(job: TrainingJob, run: _Run) -> ResumePoint:
    """Loads a preempted run's whole state; its generators are restored last, so that
    nothing drawn while building the run moves them."""
    try:
        point = training_state.load(job.resume_from)
        artifacts.load_weights(run.model, point.model)
        run.optimizer.load_state_dict(point.optimizer)
        if run.scaler is not None and point.scaler:
            run.scaler.load_state_dict(point.scaler)
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
        artifacts.load_weights(model, checkpoint.state_dict)
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
    # Images whose label was among the TOP_K most likely (counted with more classes).
    correct_top: torch.Tensor
    images: int = 0

    def mean_loss(self) -> float:
        return float(self.loss.item()) / max(self.images, 1)

    def accuracy(self) -> float:
        return float(self.correct.item()) / max(self.images, 1)

    def top_accuracy(self) -> float:
        return float(self.correct_top.item()) / max(self.images, 1)

    def add(
        self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor, top: bool
    ) -> None:
        """One batch: `loss` is its mean."""
        logits = logits.detach()
        self.loss += loss.detach().float() * len(labels)
        self.correct += (logits.argmax(dim=1) == labels).sum()
        if top:
            best = logits.topk(TOP_K, dim=1).indices
            self.correct_top += (best == labels.unsqueeze(1)).any(dim=1).sum()
        self.images += len(labels)


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
        self.precision = recipe.resolve_precision(job.precision, device)
        self.scaler = self.precision.scaler(device)
        self.check_gradients = self.precision.checks_gradients(device)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=job.label_smoothing)
        # Validation loss is plain cross-entropy, whatever the smoothing: comparable
        # between recipes, and what early stopping watches.
        self.val_criterion = torch.nn.CrossEntropyLoss()
        self.top = len(data.classes) > TOP_K
        # Only the classifier head learns in the first `freeze_epochs` epochs.
        self.head = head_parameter_names(model) if job.freeze_epochs else frozenset[str]()
        train_set, val_set = split(data.dataset, job.val_split, job.seed)
        size = len(train_set)  # type: ignore[arg-type]
        transform = pipeline(job.augment, job.image_size)
        train_data: Dataset[Any] = train_set
        if transform is not None:
            train_data = AugmentedSet(
                train_set, transform, seed=job.seed, mean=data.mean, std=data.std
            )
        # A final batch of one image breaks batch norm in train mode ("expected more than
        # 1 value per channel"), so when the split leaves exactly one over, skip it.
        drop_last = size > job.batch_size and size % job.batch_size == 1
        self.order = EpochBatches(
            size, job.batch_size, job.seed, drop_last=drop_last, keyed=transform is not None
        )
        self.loader_workers = (
            min(MAX_LOADER_WORKERS, max(1, job.num_threads)) if device.type == "cuda" else 0
        )
        self.train_loader = self._loader(train_data, batch_sampler=self.order)
        self.val_loader = None if val_set is None else self._loader(val_set)
        self.batches = self.order.batches
        if self.batches == 0:
            raise JobError(f"dataset {job.dataset} leaves no images to train on")

    def _loader(
        self, dataset: Dataset[Any], batch_sampler: EpochBatches | None = None
    ) -> DataLoader[Any]:
        return DataLoader(
            dataset,
            # Training: the epoch's own order, from a given batch on (EpochBatches).
            batch_sampler=batch_sampler,
            batch_size=1 if batch_sampler is not None else self.job.batch_size,
            num_workers=self.loader_workers,
            persistent_workers=self.loader_workers > 0,
            pin_memory=self.device.type == "cuda",
            # Each iteration draws a seed for loader workers from this generator; from
            # torch's global one it would move dropout's draws by one per epoch, and a
            # resumed run (which starts its iterator at another point) would differ.
            # (Augmentation does not use the workers' seeds: see engines.augment.)
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
        self._describe()
        metrics = dict(metrics or {})
        start, totals = 0, None
        if resume is not None:
            first_epoch, start, metrics = resume.epoch, resume.batches_done, dict(resume.metrics)
            totals = self._totals()
            totals.loss += resume.loss_sum
            totals.correct += resume.correct
            totals.correct_top += resume.correct_top
            totals.images = resume.images
        last_epoch = first_epoch - 1
        # A run that had stopped early, resumed from its last checkpoint after a crash,
        # stays stopped.
        if resume is None and "stopped_early_at_epoch" in metrics:
            first_epoch = job.epochs + 1
        for epoch in range(first_epoch, job.epochs + 1):
            metrics = recipe.keep_best(self._epoch(epoch, metrics, start, totals), metrics)
            stop = recipe.should_stop_early(job, metrics) and epoch < job.epochs
            if stop:
                # In the checkpoint too, so a run resumed from it stays stopped.
                metrics["stopped_early_at_epoch"] = float(epoch)
            self.emit(JobEvent(_epoch_line(epoch, job.epochs, metrics), metrics=metrics))
            start, totals, last_epoch = 0, None, epoch
            self._stop_if_asked(f"after epoch {epoch}")
            self._save(checkpoint_path(job.output_dir, epoch), epoch, metrics, optimizer=True)
            self.emit(JobEvent(f"saved checkpoint epoch {epoch}"))
            if stop:
                self.emit(
                    JobEvent(
                        f"stopping early after epoch {epoch}: the validation loss has not "
                        f"improved for {job.early_stopping_patience} epochs (best "
                        f"{metrics[recipe.BEST_VAL_LOSS]:.4f})"
                    )
                )
                break
        if self.device.type == "cuda":
            metrics["peak_memory_bytes"] = float(torch.cuda.max_memory_allocated(self.device))
        metrics["progress"] = 1.0
        final_path = self._keep(metrics, last_epoch)
        # A preemption's resume point is spent: nothing may resume from it again.
        with contextlib.suppress(FileNotFoundError):
            os.remove(resume_point_path(job.output_dir))
        return JobResult(metrics=metrics, model_path=final_path)

    def _describe(self) -> None:
        job = self.job
        n_train = len(self.train_loader.dataset)  # type: ignore[arg-type]
        n_val = 0 if self.val_loader is None else len(self.val_loader.dataset)  # type: ignore[arg-type]
        params = zoo.count_parameters(self.model)
        self.emit(
            JobEvent(
                f"training {job.model} ({params:,} parameters) on {self.device}: "
                f"{len(self.data)} images in {len(self.data.classes)} classes "
                f"({n_train} train, {n_val} validation), {job.epochs} epochs of "
                f"{self.batches} batches" + normalisation.describe(self.data.mean, self.data.std)
            )
        )
        scaler = ", with a gradient scaler" if self.scaler is not None else ""
        self.emit(
            JobEvent(
                f"recipe: {job.optimizer} at learning rate {job.learning_rate:g} "
                f"({job.lr_schedule} schedule, {job.warmup_epochs} warm-up epochs), "
                f"weight decay {job.weight_decay:g}, label smoothing {job.label_smoothing:g}, "
                f"augment {job.augment}, precision {self.precision.name}{scaler}"
                + (f", {self.loader_workers} loader workers" if self.loader_workers else "")
            )
        )
        if self.head:
            self.emit(
                JobEvent(
                    f"{_frozen_span(job.freeze_epochs)} only the classifier head "
                    f"({', '.join(sorted(self.head))}); every layer from epoch "
                    f"{job.freeze_epochs + 1}"
                )
            )

    def _keep(self, metrics: dict[str, float], last_epoch: int) -> str:
        """Writes the final model: the weights of the epoch with the best validation
        accuracy (`metrics["best_epoch"]`), which may be before the last."""
        path = model_path(self.job.output_dir)
        best = int(metrics.get(recipe.BEST_EPOCH, last_epoch))
        kept = dict(metrics)
        if best != last_epoch:
            try:
                checkpoint = artifacts.load_artifact(checkpoint_path(self.job.output_dir, best))
            except artifacts.ArtifactError as exc:
                raise JobError(f"cannot read the checkpoint of epoch {best}: {exc}") from None
            artifacts.load_weights(self.model, checkpoint.state_dict)
            # The model file's numbers are its own epoch's; the run's totals stay in
            # the task's metrics.
            kept = {
                **checkpoint.metrics,
                **{k: v for k, v in metrics.items() if k.startswith("best_")},
            }
        self._save(path, best, kept, optimizer=False)
        because = _kept_because(metrics, best, last_epoch)
        self.emit(JobEvent(f"saved model {path} (epoch {best} of {last_epoch}: {because})"))
        return path

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
                correct_top=float(totals.correct_top.item()),
                images=totals.images,
                metrics=last_metrics,
                rng=training_state.capture_rng(),
                scaler=self.scaler.state_dict() if self.scaler is not None else {},
            ),
        )
        raise JobPreempted(Preemption(path, epoch, done, time.monotonic() - began))

    def _stop_if_asked(self, where: str) -> None:
        if self.should_stop():
            raise JobCancelled(f"training cancelled {where}")

    def _totals(self) -> _Totals:
        zero = torch.zeros((), device=self.device)
        return _Totals(loss=zero.clone(), correct=zero.clone(), correct_top=zero.clone())

    def _epoch(
        self,
        epoch: int,
        last_metrics: dict[str, float],
        start: int = 0,
        totals: _Totals | None = None,
    ) -> dict[str, float]:
        """One epoch, from batch `start` (0-based) on with the sums of the batches before
        it in `totals`; `last_metrics` (the epoch before's) go into a resume point."""
        frozen = epoch <= self.job.freeze_epochs
        with recipe.frozen_except(self.model, self.head) if frozen else contextlib.nullcontext():
            return self._train_epoch(epoch, last_metrics, start, totals)

    def _train_epoch(
        self,
        epoch: int,
        last_metrics: dict[str, float],
        start: int,
        totals: _Totals | None,
    ) -> dict[str, float]:
        self.model.train()
        if epoch <= self.job.freeze_epochs:
            recipe.hold_norm_statistics(self.model, self.head)
        totals = totals if totals is not None else self._totals()
        # Images of the batches run before a resume: not part of this run's speed.
        earlier = totals.images
        self.order.set_epoch(epoch, start)
        started = last_report = time.monotonic()
        lr = self.job.learning_rate
        for batch, (images, labels) in enumerate(self.train_loader, start=start + 1):
            self._stop_if_asked(f"at epoch {epoch} batch {batch}")
            if self.should_yield():
                self._yield(epoch, batch - 1, totals, last_metrics)
            step = (epoch - 1) * self.batches + batch - 1
            lr = self.job.learning_rate * recipe.lr_factor(self.job, step, self.batches)
            recipe.set_learning_rate(self.optimizer, lr)
            images, labels = self._to_device(images, labels)
            with self.precision.autocast(self.device):
                logits = self._forward(images, first=epoch == 1 and batch == 1)
                loss = self.criterion(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                if not self.check_gradients or recipe.gradients_finite(self.model):
                    self.optimizer.step()
                else:
                    self._skip_step(epoch, batch)
            totals.add(logits, labels, loss, self.top)
            now = time.monotonic()
            if batch == self.batches or now - last_report >= PROGRESS_INTERVAL_S:
                last_report = now
                self._report_progress(epoch, batch, totals, earlier, now - started, lr)
        train_seconds = time.monotonic() - started
        metrics = {
            "epoch": float(epoch),
            "loss": totals.mean_loss(),
            "accuracy": totals.accuracy(),
        }
        if self.top:
            metrics["top5_accuracy"] = totals.top_accuracy()
        if self.val_loader is not None:
            self._stop_if_asked(f"before validating epoch {epoch}")
            metrics.update(self._validate(self.val_loader))
        metrics["images_per_sec"] = (totals.images - earlier) / max(train_seconds, 1e-9)
        metrics["progress"] = epoch / self.job.epochs
        metrics["learning_rate"] = lr
        # The CPU threads it runs on now: they follow the jobs sharing the device.
        metrics["threads"] = float(torch.get_num_threads())
        return metrics

    def _to_device(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

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

    def _skip_step(self, epoch: int, batch: int) -> None:
        # What fp16's gradient scaler does with a non-finite gradient (see
        # `Precision.checks_gradients`): the weights stay as they were.
        self.emit(
            JobEvent(
                f"epoch {epoch} batch {batch}: a gradient was not finite in "
                f"{self.precision.name}; this batch's step was skipped",
                level=Level.WARNING,
            )
        )

    def _report_progress(
        self, epoch: int, batch: int, totals: _Totals, earlier: int, seconds: float, lr: float
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
            "learning_rate": lr,
            "threads": float(torch.get_num_threads()),
        }
        self.emit(
            JobEvent(
                f"epoch {epoch}/{self.job.epochs} batch {batch}/{self.batches}: "
                f"loss {loss:.4f}, accuracy {metrics['accuracy']:.3f}",
                metrics=metrics,
            )
        )

    def _validate(self, loader: DataLoader[Any]) -> dict[str, float]:
        self.model.eval()
        totals = self._totals()
        with torch.no_grad(), self.precision.autocast(self.device):
            for images, labels in loader:
                images, labels = self._to_device(images, labels)
                logits = self._logits(images)
                totals.add(logits, labels, self.val_criterion(logits.float(), labels), self.top)
        self.model.train()
        metrics = {"val_loss": totals.mean_loss(), "val_accuracy": totals.accuracy()}
        if self.top:
            metrics["val_top5_accuracy"] = totals.top_accuracy()
        return metrics

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


def _frozen_span(epochs: int) -> str:
    return "epoch 1 trains" if epochs == 1 else f"epochs 1-{epochs} train"


def _kept_because(metrics: dict[str, float], best: int, last: int) -> str:
    if recipe.BEST_VAL_ACCURACY not in metrics:
        return "the last, without a validation split to choose by"
    accuracy = metrics[recipe.BEST_VAL_ACCURACY]
    return f"the best validation accuracy, {accuracy:.3f}" + (
        "" if best == last else ", kept over later epochs"
    )


def _epoch_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    parts = [f"loss {metrics['loss']:.4f}", f"accuracy {metrics['accuracy']:.3f}"]
    if "val_loss" in metrics:
        parts += [
            f"val_loss {metrics['val_loss']:.4f}",
            f"val_accuracy {metrics['val_accuracy']:.3f}",
        ]
    if "val_top5_accuracy" in metrics:
        parts.append(f"val_top5_accuracy {metrics['val_top5_accuracy']:.3f}")
    return f"epoch {epoch}/{epochs}: {', '.join(parts)} ({metrics['images_per_sec']:.0f} images/s)"
