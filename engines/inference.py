"""Batch inference: one `InferenceJob` run start to finish inside a worker process.

`run_inference` loads a model artifact, reads a dataset (an ImageFolder, a flat folder of
images, or the synthetic set) in batches through a `Predictor`, and writes one JSON line
of top-k predictions per image to `predictions.jsonl` in the job's output folder. It
reports like training does (a start line, throttled progress metrics, running accuracy
when the images are labelled) and polls `should_stop` between batches.

An image that cannot be read fails its own row, not the job: a dataset of a million files
with one broken JPEG still yields a million rows, one of them saying what was wrong.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol

import torch

from engines.artifacts import ArtifactError, ModelArtifact, load_artifact
from engines.datasets import (
    SYNTHETIC,
    InferenceFolder,
    SyntheticShapes,
    scan_inference_folder,
    synthetic_dataset,
)
from engines.devices import free_after_oom, resolve_device
from engines.jobs import (
    InferenceJob,
    JobCancelled,
    JobError,
    JobEvent,
    JobResult,
    Level,
    first_line,
)
from engines.predict import ImageError, Predictor, open_image

# Progress events at most this often; the last batch is always reported.
PROGRESS_INTERVAL_S = 0.5

PREDICTIONS_FILE = "predictions.jsonl"

# The synthetic set is generated from a seed; inference jobs have none, so fix one.
_SYNTHETIC_SEED = 0


def predictions_path(output_dir: str) -> str:
    """Where a batch inference writes its predictions."""
    return os.path.join(output_dir, PREDICTIONS_FILE)


def run_inference(
    job: InferenceJob, emit: Callable[[JobEvent], None], should_stop: Callable[[], bool]
) -> JobResult:
    """Run `job`; return its metrics and the path of its predictions file.

    Raises JobCancelled when `should_stop()` turns true (checked before every batch; no
    predictions file is left behind), and JobError with a user-facing sentence when the
    job cannot run as asked (bad model file, dataset, device, or out of GPU memory).
    """
    if job.batch_size < 1:
        raise JobError(f"batch_size must be at least 1, not {job.batch_size}")
    if job.top_k < 1:
        raise JobError(f"top_k must be at least 1, not {job.top_k}")
    # Process-wide, which is right: a worker process runs one job at a time.
    torch.set_num_threads(max(1, job.num_threads))
    device = resolve_device(job.device)
    try:
        artifact = load_artifact(job.model_path)
    except ArtifactError as exc:
        raise JobError(str(exc)) from None
    source = _open_source(job.dataset, artifact)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    oom = ""
    try:
        try:
            predictor = Predictor(artifact, str(device))
        except ArtifactError as exc:
            raise JobError(str(exc)) from None
        return _Run(job, emit, should_stop, predictor, source).run()
    except torch.cuda.OutOfMemoryError as exc:
        oom = first_line(exc)
    free_after_oom()  # outside the except block, so the traceback's tensors are garbage
    raise JobError(
        f"out of memory on {device} running {artifact.architecture} with batch_size "
        f"{job.batch_size} at {artifact.image_size} px; try a smaller batch_size ({oom})"
    )


class _Source(Protocol):
    """The images of a dataset, by index, in the order their rows are written."""

    description: str
    # True class names, sorted; empty when the images are unlabelled.
    classes: Sequence[str]

    def __len__(self) -> int: ...

    def file(self, index: int) -> str: ...

    def label(self, index: int) -> str | None: ...

    def load(self, index: int, predictor: Predictor) -> torch.Tensor:
        """The image as model input; raises ImageError when it cannot be read."""
        ...


class _FolderSource:
    def __init__(self, folder: InferenceFolder) -> None:
        self.folder = folder
        self.classes: Sequence[str] = folder.classes
        kind = f"{len(folder.classes)} class folders" if folder.labelled else "a flat folder"
        self.description = f"{folder.root} ({kind})"

    def __len__(self) -> int:
        return len(self.folder.files)

    def file(self, index: int) -> str:
        return self.folder.files[index]

    def label(self, index: int) -> str | None:
        return self.folder.labels[index]

    def load(self, index: int, predictor: Predictor) -> torch.Tensor:
        path = os.path.join(self.folder.root, self.folder.files[index])
        return predictor.preprocess(open_image(path))


class _SyntheticSource:
    def __init__(self, shapes: SyntheticShapes) -> None:
        self.shapes = shapes
        self.classes: Sequence[str] = shapes.classes
        self.description = f"the synthetic set at {shapes.image_size} px"

    def __len__(self) -> int:
        return len(self.shapes)

    def file(self, index: int) -> str:
        return f"{SYNTHETIC}/{index:06d}"

    def label(self, index: int) -> str | None:
        return self.shapes.classes[self.shapes.targets[index]]

    def load(self, index: int, predictor: Predictor) -> torch.Tensor:
        # Generated already normalised with the artifact's mean/std at its size.
        image, _ = self.shapes[index]
        return image


def _open_source(spec: str, artifact: ModelArtifact) -> _Source:
    if spec == SYNTHETIC:
        shapes = synthetic_dataset(
            artifact.image_size, _SYNTHETIC_SEED, artifact.mean, artifact.std
        )
        return _SyntheticSource(shapes)
    return _FolderSource(scan_inference_folder(spec))


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


class _Run:
    """One pass over the dataset: counts, progress, and the predictions file."""

    def __init__(
        self,
        job: InferenceJob,
        emit: Callable[[JobEvent], None],
        should_stop: Callable[[], bool],
        predictor: Predictor,
        source: _Source,
    ) -> None:
        self.job = job
        self.emit = emit
        self.should_stop = should_stop
        self.predictor = predictor
        self.source = source
        self.total = len(source)
        self.done = 0
        self.errors = 0
        # Accuracy counts images that got predictions; an unreadable one has no answer to
        # be right or wrong about, and is counted in `errors` instead.
        self.measure_accuracy = bool(source.classes)
        self.predicted = 0
        self.correct = 0

    def run(self) -> JobResult:
        self._announce()
        final_path = predictions_path(self.job.output_dir)
        os.makedirs(self.job.output_dir, exist_ok=True)
        # Rows go to a temporary file beside the final one and are renamed into place
        # only when every image is done: a reader never sees a partial predictions file,
        # and a cancelled or failed job leaves none.
        tmp_path = os.path.join(self.job.output_dir, f".{PREDICTIONS_FILE}.{uuid.uuid4().hex}.tmp")
        started = time.monotonic()
        try:
            with open(tmp_path, "w", encoding="utf-8") as out:
                self._predict_all(out, started)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_path, final_path)
        except BaseException:
            if os.path.exists(tmp_path):
                os.unlink(tmp_path)
            raise
        metrics = self._metrics(time.monotonic() - started, final=True)
        device = self.predictor.device
        if device.type == "cuda":
            metrics["peak_memory_bytes"] = float(torch.cuda.max_memory_allocated(device))
        self.emit(JobEvent(f"wrote {self.done} predictions to {final_path}{self._summary()}"))
        return JobResult(metrics=metrics, output_path=final_path)

    def _announce(self) -> None:
        artifact = self.predictor.artifact
        self.emit(
            JobEvent(
                f"inference with {artifact.architecture} ({artifact.num_classes} classes, "
                f"{artifact.image_size} px) on {self.predictor.device}: {self.total} images "
                f"from {self.source.description}, batch_size {self.job.batch_size}, "
                f"top {min(self.job.top_k, artifact.num_classes)}; network: "
                f"{self.predictor.preparation.describe()}"
            )
        )
        if not self.measure_accuracy:
            return
        known = set(artifact.classes)
        unknown = [name for name in self.source.classes if name not in known]
        if len(unknown) == len(self.source.classes):
            self.measure_accuracy = False
            self.emit(
                JobEvent(
                    f"dataset classes {_names(self.source.classes)} do not match the model's "
                    f"classes {_names(artifact.classes)}; accuracy is not measured",
                    level=Level.WARNING,
                )
            )
        elif unknown:
            self.emit(
                JobEvent(
                    f"dataset classes {_names(unknown)} are not among the model's classes; "
                    "their images count as wrong in the accuracy",
                    level=Level.WARNING,
                )
            )

    def _predict_all(self, out: IO[str], started: float) -> None:
        batch_size = self.job.batch_size
        batches = math.ceil(self.total / batch_size)
        last_report = started
        for batch, first in enumerate(range(0, self.total, batch_size), start=1):
            if self.should_stop():
                raise JobCancelled(
                    f"inference cancelled at batch {batch} of {batches} "
                    f"({self.done} of {self.total} images done)"
                )
            indices = range(first, min(first + batch_size, self.total))
            for line in self._batch_rows(indices):
                out.write(line)
                out.write("\n")
            now = time.monotonic()
            if batch == batches or now - last_report >= PROGRESS_INTERVAL_S:
                last_report = now
                self._report_progress(now - started)

    def _batch_rows(self, indices: range) -> list[str]:
        """The JSON lines for the images at `indices`, in order, and the counts updated."""
        tensors: list[torch.Tensor] = []
        problems: dict[int, str] = {}
        for index in indices:
            try:
                tensors.append(self.source.load(index, self.predictor))
            except ImageError as exc:
                problems[index] = str(exc)
        answers = iter(
            self.predictor.predict_batch(torch.stack(tensors), self.job.top_k) if tensors else []
        )
        rows: list[str] = []
        for index in indices:
            file, label = self.source.file(index), self.source.label(index)
            row: dict[str, Any] = {"file": file, "label": label}
            if index in problems:
                row["error"] = problems[index]
                self.errors += 1
            else:
                predictions = next(answers)
                row["predictions"] = [
                    {"label": p.label, "score": p.score, "index": p.index} for p in predictions
                ]
                self.predicted += 1
                self.correct += int(predictions[0].label == label)
            try:
                # allow_nan=False: NaN is not JSON, and a reader of this file must be
                # able to parse every line.
                rows.append(json.dumps(row, allow_nan=False))
            except ValueError:
                raise JobError(
                    f"the model gave a score that is not a number for {file}: its weights "
                    "are broken (a diverged training run leaves NaN or infinite weights)"
                ) from None
            self.done += 1
        return rows

    def _metrics(self, seconds: float, *, final: bool = False) -> dict[str, float]:
        metrics = {
            "images": float(self.done),
            "images_per_sec": self.done / max(seconds, 1e-9),
            "errors": float(self.errors),
            # The CPU threads it runs on now: they follow the jobs sharing the device.
            "threads": float(torch.get_num_threads()),
        }
        if not final:
            metrics["images_total"] = float(self.total)
            metrics["progress"] = self.done / self.total
        if self.measure_accuracy and self.predicted:
            metrics["accuracy"] = self.correct / self.predicted
        return metrics

    def _summary(self) -> str:
        parts = []
        if self.measure_accuracy and self.predicted:
            parts.append(f"accuracy {self.correct / self.predicted:.3f}")
        if self.errors:
            parts.append(f"{self.errors} unreadable image{'s' if self.errors != 1 else ''}")
        return f": {', '.join(parts)}" if parts else ""

    def _report_progress(self, seconds: float) -> None:
        metrics = self._metrics(seconds)
        self.emit(
            JobEvent(
                f"{self.done}/{self.total} images ({metrics['progress']:.0%})"
                f"{self._summary()} ({metrics['images_per_sec']:.0f} images/s)",
                metrics=metrics,
            )
        )
